"""What the service does, independent of BentoML's decorators (so it can be tested).

`ServingApp` validates records against the champion's signature, routes each
record (champion / canary challenger / shadow), batches concurrent requests
into one model call per model, appends every prediction to the prediction log
and answers only after the log commit that holds its records.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from starlette.responses import JSONResponse

from bentos.batching import MicroBatcher
from bentos.config import ServingSettings
from bentos.follower import (
    CHALLENGER,
    CHAMPION,
    PREVIOUS,
    AliasCache,
    AliasFollower,
    AliasSource,
    CircuitBreaker,
    ModelLoader,
    Snapshot,
)
from bentos.gateway import GatewayConfig
from bentos.metrics import ServingMetrics
from bentos.predlog import FeedbackRecord, GroupCommitWriter, PredictionLog, PredictionRecord
from bentos.routing import SHADOW, Route, route
from bentos.schema import ENTITY_ID, REQUEST_ID, LabelSchema, SchemaError, ValidRecord
from bentos.store import LoadedModel, import_version, load_model, local_model
from registry import Registry

log = logging.getLogger("driftloop.serving")


@dataclass(frozen=True)
class WorkItem:
    """One record on its way through a batch, with the models it was validated against."""

    record: ValidRecord
    route: Route
    champion: LoadedModel
    challenger: LoadedModel | None
    received: float  # time.perf_counter() at request arrival


@dataclass(frozen=True)
class Answer:
    prediction: Any
    version: str
    role: str


class ServingApp:
    """Models, routing, batching and the prediction log for one registered model."""

    def __init__(
        self,
        settings: ServingSettings,
        model_name: str | None = None,
        pinned_version: str | None = None,
        bento_tag: str | None = None,
        source: AliasSource | None = None,
        loader: ModelLoader | None = None,
    ) -> None:
        self.settings = settings
        self.model_name = model_name or settings.model_name
        self.bento_tag = bento_tag
        self.pinned_version = pinned_version
        self.metrics = ServingMetrics()
        self.registry = Registry(self.model_name, settings.resolved_tracking_uri())
        self.log = PredictionLog(settings.resolved_prediction_log_url())
        self.writer = GroupCommitWriter(self.log, on_commit=self._observe_commit)
        self.follower = AliasFollower(
            model_name=self.model_name,
            source=source or self.registry,
            loader=loader or self._load_version,
            cache=AliasCache(settings.serving_state_path(self.model_name) / "aliases.json"),
            poll_interval_s=settings.alias_poll_interval_s,
            breaker=CircuitBreaker(
                settings.registry_backoff_initial_s, settings.registry_backoff_max_s
            ),
            pinned_version=pinned_version,
            on_change=self._on_change,
            on_registry=self._on_registry,
        )
        self.batcher: MicroBatcher[WorkItem, tuple[Answer, Future[None]]] = MicroBatcher(
            self._process,
            max_batch_size=settings.max_batch_size,
            max_latency_ms=settings.max_latency_ms,
            on_batch=self.metrics.batch_records.labels(self.model_name).observe,
        )
        self._model_thread = ThreadPoolExecutor(1, thread_name_prefix="model")
        api_key = settings.api_key.get_secret_value() if settings.api_key else None
        self.gateway_config = GatewayConfig(api_key=api_key, max_body_bytes=settings.max_body_bytes)
        self._froze_after_load = False

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        self.follower.start()

    async def close(self) -> None:
        self.follower.stop()
        await self.batcher.close()
        self._model_thread.shutdown(wait=True)
        self.writer.close()
        self.log.close()

    def _load_version(self, version: str, allow_import: bool) -> LoadedModel:
        model = local_model(self.model_name, version)
        if model is None:
            if not allow_import:
                raise LookupError(
                    f"version {version} is not in the local BentoML store and the registry "
                    "is unreachable; it will be imported when the registry answers"
                )
            model = import_version(self.registry, version)
        return load_model(model)

    # -- POST /predict ----------------------------------------------------------------------
    async def predict(self, records: list[dict[str, Any]]) -> JSONResponse:
        received = time.perf_counter()
        snap = self.follower.snapshot
        if snap.champion is None:
            return JSONResponse({"detail": self._not_ready_reason()}, status_code=503)
        try:
            valid = snap.champion.schema.validate(records)
        except SchemaError as exc:
            return JSONResponse({"detail": exc.errors}, status_code=422)
        share = self.settings.canary_share
        has_challenger = snap.challenger is not None
        items = [
            WorkItem(
                record,
                route(record.routing_key, share, has_challenger, salt=self.model_name),
                snap.champion,
                snap.challenger,
                received,
            )
            for record in valid
        ]
        try:
            results = await self.batcher.submit(items)
        except Exception as exc:
            log.exception("prediction failed")
            return JSONResponse(
                {"detail": f"the model failed on this request ({type(exc).__name__}: {exc})"},
                status_code=500,
            )
        commits = {id(commit): commit for _, commit in results}
        try:
            await asyncio.gather(*(asyncio.wrap_future(c) for c in commits.values()))
        except Exception as exc:
            return JSONResponse(
                {"detail": f"prediction log unavailable, so no answer was given: {exc}"},
                status_code=503,
            )
        answers = [answer for answer, _ in results]
        versions = [a.version for a in answers]
        single = versions[0] if len(set(versions)) == 1 else None
        body = {
            "predictions": [a.prediction for a in answers],
            "request_ids": [item.record.request_id for item in items],
            "model_version": single,
            "model_versions": versions,
        }
        return JSONResponse(body, headers={"x-model-version": single or ",".join(versions)})

    async def _process(self, items: list[WorkItem]) -> list[tuple[Answer, Future[None]]]:
        """One batch: model calls in the model thread, then hand the records to the log."""
        loop = asyncio.get_running_loop()
        answers, records = await loop.run_in_executor(self._model_thread, self._infer, items)
        commit = self.writer.submit(records)
        return [(answer, commit) for answer in answers]

    def _infer(self, items: list[WorkItem]) -> tuple[list[Answer], list[PredictionRecord]]:
        """Answer every item (one call per model and role) and shadow-predict where asked."""
        answers: list[Answer | None] = [None] * len(items)
        ready_at: list[float] = [0.0] * len(items)
        groups: dict[tuple[int, str], tuple[LoadedModel, list[int]]] = {}
        for i, item in enumerate(items):
            if item.route.answer == CHALLENGER and item.challenger is not None:
                model, role = item.challenger, CHALLENGER
            else:
                model, role = item.champion, CHAMPION
            groups.setdefault((id(model), role), (model, []))[1].append(i)
        fallback: list[int] = []
        for (_, role), (model, idxs) in groups.items():
            try:
                preds = self._call(model, role, [items[i].record for i in idxs])
            except Exception:
                if role == CHALLENGER:  # a failing challenger must not fail callers
                    fallback += idxs
                    continue
                raise
            done = time.perf_counter()
            for i, pred in zip(idxs, preds, strict=True):
                answers[i], ready_at[i] = Answer(pred, model.version, role), done
        if fallback:
            by_champion: dict[int, tuple[LoadedModel, list[int]]] = {}
            for i in fallback:
                by_champion.setdefault(id(items[i].champion), (items[i].champion, []))[1].append(i)
            for model, idxs in by_champion.values():
                preds = self._call(model, CHAMPION, [items[i].record for i in idxs])
                done = time.perf_counter()
                for i, pred in zip(idxs, preds, strict=True):
                    answers[i], ready_at[i] = Answer(pred, model.version, CHAMPION), done
        now = time.time()
        seen: set[tuple[float, str, str]] = set()
        records = [
            self._record(item, answer.prediction, answer.version, answer.role, ready, now, seen)
            for item, answer, ready in zip(items, answers, ready_at, strict=True)
            if answer is not None
        ]
        records += self._shadow(items, now, seen)
        return [a for a in answers if a is not None], records

    def _shadow(
        self, items: list[WorkItem], now: float, seen: set[tuple[float, str, str]]
    ) -> list[PredictionRecord]:
        """The challenger predicts shadowed records for the log only; failures are logged."""
        groups: dict[int, tuple[LoadedModel, list[WorkItem]]] = {}
        for item in items:
            if item.route.shadow and item.challenger is not None:
                groups.setdefault(id(item.challenger), (item.challenger, []))[1].append(item)
        records: list[PredictionRecord] = []
        for model, group in groups.values():
            try:
                preds = self._call(model, SHADOW, [item.record for item in group])
            except Exception:
                continue
            done = time.perf_counter()
            records += [
                self._record(item, pred, model.version, SHADOW, done, now, seen)
                for item, pred in zip(group, preds, strict=True)
            ]
        return records

    def _call(self, model: LoadedModel, role: str, records: list[ValidRecord]) -> list[Any]:
        started = time.perf_counter()
        try:
            preds = model.predict(records)
        except Exception as exc:
            self.metrics.model_errors.labels(self.model_name, model.version, role).inc()
            log.warning(
                "model version %s (%s) failed on %d records: %s",
                model.version,
                role,
                len(records),
                exc,
            )
            raise
        elapsed = time.perf_counter() - started
        self.metrics.model_call_seconds.labels(self.model_name, model.version).observe(elapsed)
        self.metrics.predictions.labels(self.model_name, model.version, role).inc(len(records))
        return preds

    def _record(
        self,
        item: WorkItem,
        prediction: Any,
        version: str,
        role: str,
        ready: float,
        now: float,
        seen: set[tuple[float, str, str]],
    ) -> PredictionRecord:
        latency_s = ready - item.received
        key = (item.received, version, role)
        if key not in seen:  # one observation per request and model, not per record
            seen.add(key)
            self.metrics.prediction_latency_seconds.labels(self.model_name, version, role).observe(
                latency_s
            )
        return PredictionRecord(
            request_id=item.record.request_id,
            entity_id=item.record.entity_id,
            model_name=self.model_name,
            model_version=version,
            role=role,
            features=item.record.features,
            prediction=prediction,
            latency_ms=latency_s * 1000.0,
            ts=now,
        )

    # -- POST /feedback ----------------------------------------------------------------------
    async def feedback(self, labels: list[dict[str, Any]]) -> JSONResponse:
        snap = self.follower.snapshot
        schema = snap.champion.label_schema if snap.champion is not None else LabelSchema()
        try:
            valid = schema.validate(labels)
        except SchemaError as exc:
            return JSONResponse({"detail": exc.errors}, status_code=422)
        loop = asyncio.get_running_loop()
        ids = [label.request_id for label in valid]
        known = await loop.run_in_executor(None, self.log.known_request_ids, ids)
        records = [FeedbackRecord(lab.request_id, self.model_name, lab.label) for lab in valid]
        try:
            await asyncio.wrap_future(self.writer.submit(feedback=records))
        except Exception as exc:
            return JSONResponse(
                {"detail": f"prediction log unavailable, labels not stored: {exc}"},
                status_code=503,
            )
        self.metrics.feedback.labels(self.model_name).inc(len(records))
        unknown = [rid for rid in dict.fromkeys(ids) if rid not in known]
        return JSONResponse({"accepted": len(records), "unknown_request_ids": unknown})

    # -- GET endpoints (served by the gateway middleware) ---------------------------------
    def healthz(self) -> tuple[int, dict[str, Any]]:
        return 200, {"status": "alive", "model_name": self.model_name}

    def readyz(self) -> tuple[int, dict[str, Any]]:
        status = self.follower.status()
        body: dict[str, Any] = {"model_name": self.model_name, **status}
        if self.follower.snapshot.champion is None:
            return 503, {"status": "not_ready", "reason": self._not_ready_reason(), **body}
        degraded = not status["registry"]["reachable"]
        body["status"] = "degraded" if degraded else "ready"
        if degraded:
            body["reason"] = (
                "registry unreachable: serving the loaded versions, aliases are not followed"
            )
        return 200, {"status": body.pop("status"), **body}

    def metadata(self) -> tuple[int, dict[str, Any]]:
        snap = self.follower.snapshot
        share = self.settings.canary_share
        mode = "champion only"
        if snap.challenger is not None:
            mode = "shadow" if share <= 0 else "canary"
        champion = snap.champion
        return 200, {
            "model_name": self.model_name,
            "bento": self.bento_tag,
            "champion": _describe(champion),
            "challenger": _describe(snap.challenger),
            "previous": snap.aliases.get(PREVIOUS),
            "aliases": dict(snap.aliases),
            "routing": {
                "canary_share": share,
                "mode": mode,
                "sticky_by": f"{ENTITY_ID}, else {REQUEST_ID}",
            },
            "schema": {
                "features": champion.schema.describe() if champion else None,
                "checked": champion.schema.checked if champion else None,
                "reserved_keys": [REQUEST_ID, ENTITY_ID],
                "label": champion.label_schema.kind if champion else None,
            },
            "batching": {
                "max_batch_size": self.settings.max_batch_size,
                "max_latency_ms": self.settings.max_latency_ms,
            },
            "auth_required": self.gateway_config.api_key is not None,
            "max_body_bytes": self.gateway_config.max_body_bytes,
        }

    def _not_ready_reason(self) -> str:
        status = self.follower.status()
        if not status["registry"]["reachable"] and not status["aliases"]:
            return (
                f"no model loaded for {self.model_name!r}: the registry is unreachable "
                f"({status['registry']['last_error']}) and no aliases are cached"
            )
        if not status["aliases"].get(CHAMPION):
            return f"no champion for model {self.model_name}: run `driftloop train` first"
        if status["load_errors"]:
            return f"no model loaded yet; load errors: {status['load_errors']}"
        return "loading the champion"

    # -- callbacks ----------------------------------------------------------------------------
    def _on_change(self, snapshot: Snapshot) -> None:
        for role, model in ((CHAMPION, snapshot.champion), (CHALLENGER, snapshot.challenger)):
            version = float(model.version) if model and model.version.isdigit() else 0.0
            self.metrics.alias_version.labels(self.model_name, role).set(version)
        if snapshot.champion is not None and not self._froze_after_load:
            # Long-lived model objects out of the GC's way (see service.py for why).
            self._froze_after_load = True
            gc.freeze()

    def _on_registry(self, up: bool) -> None:
        self.metrics.registry_up.labels(self.model_name).set(1.0 if up else 0.0)

    def _observe_commit(self, records: int, seconds: float) -> None:
        self.metrics.log_commit_seconds.observe(seconds)
        self.metrics.log_commit_records.observe(records)


def _describe(model: LoadedModel | None) -> dict[str, Any] | None:
    if model is None:
        return None
    return {"version": model.version, "bento_model": model.tag, "labels": model.labels}
