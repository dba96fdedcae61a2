"""What the service does, independent of BentoML's decorators (so it can be tested).

`ServingApp` validates records against the champion's signature, routes each
record (champion / canary challenger / shadow), batches concurrent requests
into one model call per model, appends every prediction to the prediction log
and answers only after the log commit that holds its records.

Faults (README "Reliability"): a prediction log that cannot commit gives 503s
naming the condition and /readyz 503 until the writer's own probe finds it
writable again; a champion that raises or returns NaN/inf is answered for by the
loaded ``previous`` version (log role ``fallback``, counted, shown in /readyz and
/metadata); the service never moves an alias itself.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.responses import JSONResponse, Response

from bentos.alias_poll import alias_source
from bentos.batching import MicroBatcher
from bentos.follower import (
    AliasCache,
    AliasFollower,
    AliasSource,
    CircuitBreaker,
    ModelLoader,
    Snapshot,
)
from bentos.gateway import LARGE_BODY_RECORDS, GatewayConfig, KeyScope, feedback_scope
from bentos.metrics import ServingMetrics
from bentos.routing import model_salt, route, routing_secret
from bentos.schema import (
    ENTITY_ID,
    MAX_ERRORS,
    REQUEST_ID,
    Label,
    SchemaError,
    Steps,
    ValidBatch,
)
from bentos.startup import StartupGate, started_dir
from bentos.store import (
    MLFLOW_MODEL_FOLDER,
    LoadedModel,
    NonFinitePredictions,
    example_records,
    import_version,
    load_model,
    local_model,
    warn_requirement_mismatches,
)
from config.names import CHALLENGER, CHAMPION, PREVIOUS, SHADOW
from config.serving import ServingSettings
from predlog import jsonio
from predlog.fallbacks import FALLBACK, record_fallback_event
from predlog.log import (
    FeedbackRecord,
    GroupCommitWriter,
    LogRow,
    LogUnavailable,
    PredictionLog,
    RowBlock,
)
from registry import CANARY_SHARE_TAG, Registry

log = logging.getLogger("driftloop.serving")
# Requests with more records are validated a piece per event-loop turn, so one large body
# does not hold the loop; the common 1-100-record body is validated in one go.
INLINE_VALIDATION_RECORDS = LARGE_BODY_RECORDS  # 256 (gateway: shorter switch interval)

Scores = dict[str, float] | None  # a classifier's {class: probability} for one record
Predicted = tuple[list[Any], list[dict[str, float]] | None]  # one model call's answers

FALLBACK_RECENT_S = 60.0  # /readyz says "degraded" this long after a fallback
_RETRY_AFTER = {"retry-after": "1"}
_PEAK_WINDOW_S = 0.1  # how long a peak of requests in flight counts as "lately"


@dataclass(frozen=True, eq=False)
class RequestItem:
    """One request on its way through a batch, with the models it was validated against."""

    batch: ValidBatch
    answer_by: list[str] | None  # per record: champion | challenger (canary); None: champion
    shadow: bool  # the challenger also predicts every record, for the log only
    champion: LoadedModel
    challenger: LoadedModel | None
    received: float  # time.perf_counter() at request arrival


@dataclass(frozen=True, eq=False)
class Answered:
    """A request's answers, and the log commit that holds its records."""

    predictions: list[Any]
    versions: list[str]
    commit: asyncio.Future[None]
    probabilities: list[dict[str, float] | None]


class _LogRows:
    """A batch's log rows. A request's features go to the log as one tuple of values per
    record (a `RowBlock` per set of feature names: no dict per record), or as the dicts
    of an unchecked schema (plain rows)."""

    def __init__(self, items: list[RequestItem]) -> None:
        self.names: list[tuple[str, ...] | None] = []
        self.features: list[list[Any]] = []  # per request: one value tuple (or dict) per record
        for item in items:
            values = item.batch.feature_values()
            if values is None:
                self.names.append(None)
                self.features.append(item.batch.features())
            else:
                self.names.append(values[0])
                self.features.append(values[1])
        self.plain: list[LogRow] = []
        self._blocks: dict[tuple[str, ...], list[LogRow]] = {}

    def add(self, k: int, rows: list[LogRow]) -> None:
        """Rows of the k-th request of the batch."""
        names = self.names[k]
        (self.plain if names is None else self._blocks.setdefault(names, [])).extend(rows)

    def blocks(self) -> list[RowBlock]:
        return [RowBlock(names, rows) for names, rows in self._blocks.items()]


@dataclass
class _Part:
    """The records of one request that one model call answers (`indices` None: all)."""

    item: int
    indices: list[int] | None
    batch: ValidBatch


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
        commit_timeout_s = settings.prediction_log_commit_timeout_s
        self.log = PredictionLog(
            settings.resolved_prediction_log_url(),
            busy_timeout_s=commit_timeout_s,
            background_checkpoints=True,  # no request waits for a WAL checkpoint
        )
        self.startup = StartupGate(settings.workers, started_dir())
        self.writer = GroupCommitWriter(
            self.log, on_commit=self._observe_commit, commit_timeout_s=commit_timeout_s
        )
        self.fallbacks = 0  # records `previous` answered for a failing champion
        self.last_fallback: dict[str, Any] | None = None
        self.follower = AliasFollower(
            model_name=self.model_name,
            # One plain GET per poll, not the MLflow client (~0.5 vs ~3.5 ms of CPU a poll,
            # taken from the requests served meanwhile: bentos/alias_poll.py).
            source=source
            or alias_source(
                settings.resolved_tracking_uri(),
                self.model_name,
                settings.registry_timeout_s,
                self.registry,
            ),
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
        self.batcher: MicroBatcher[RequestItem, Answered] = MicroBatcher(
            self._process,
            max_batch_size=settings.max_batch_size,
            max_latency_ms=settings.max_latency_ms,
            on_batch=self.metrics.batch_records.labels(self.model_name).observe,
            weight=lambda item: len(item.batch),
            company=self._recent_concurrency,
        )
        self._model_thread = ThreadPoolExecutor(1, thread_name_prefix="model")
        self.gateway_config = gateway_config(settings)
        salt = settings.routing_salt.get_secret_value() if settings.routing_salt else None
        self._routing_salt = model_salt(
            routing_secret(salt, settings.serving_state_path(self.model_name)), self.model_name
        )
        self._froze_after_load = False
        self._in_flight = 0  # /predict requests between entry and answer (event loop only)
        self._peak_in_flight = 0  # the most in flight lately (`_recent_concurrency`)
        self._peak_at = 0.0
        # Versions loaded before start() returned skip MLflow's requirements check (0.7 s CPU
        # of a restarted worker); it runs for them in a thread once the worker serves.
        self._serving = False
        self._unchecked: list[str] = []
        self._check_lock = threading.Lock()

    # -- lifecycle ------------------------------------------------------------------------
    def start(self, load_first: bool = False) -> None:
        """Follow the aliases; `load_first`: load the champion before returning."""
        self.follower.start(load_first=load_first)
        with self._check_lock:
            self._serving = True
            unchecked, self._unchecked = self._unchecked, []
        if unchecked:
            threading.Thread(
                target=lambda: [warn_requirement_mismatches(path) for path in unchecked],
                name="requirements-check",
                daemon=True,
            ).start()

    async def close(self) -> None:
        self.follower.stop()
        close_source = getattr(self.follower.source, "close", None)
        if callable(close_source):
            close_source()
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
        with self._check_lock:
            check = self._serving
            if not check:
                self._unchecked.append(model.path_of(MLFLOW_MODEL_FOLDER))
        return load_model(model, check_requirements=check)

    # -- POST /predict ----------------------------------------------------------------------
    async def predict(self, records: list[dict[str, Any]]) -> Response:
        self._in_flight += 1
        now = time.monotonic()
        if self._in_flight >= self._peak_in_flight or now - self._peak_at > _PEAK_WINDOW_S:
            self._peak_in_flight, self._peak_at = self._in_flight, now
        try:
            return await self._predict(records)
        finally:
            self._in_flight -= 1

    async def _predict(self, records: list[dict[str, Any]]) -> Response:
        received = time.perf_counter()
        snap = self.follower.snapshot
        if snap.champion is None:
            return _json({"detail": self._not_ready_reason()}, 503)
        if not self.writer.healthy:  # one flag read; the writer's probe clears it
            return _json({"detail": self._log_unavailable()}, 503, _RETRY_AFTER)
        schema = snap.champion.schema
        try:
            if not isinstance(records, list) or len(records) <= INLINE_VALIDATION_RECORDS:
                batch = schema.validate_batch(records)
            else:  # large bodies: a piece per loop turn, so health probes keep being answered
                batch = await run_steps_async(schema.validate_batch_steps(records))
        except SchemaError as exc:
            return _json(exc.body(), 422)
        share = self.canary_share()
        challenger = snap.challenger
        answer_by = None
        if challenger is not None and share > 0:
            salt = self._routing_salt
            answer_by = [route(key, share, True, salt).answer for key in batch.routing_keys()]
        item = RequestItem(
            batch,
            answer_by,
            challenger is not None and share <= 0,
            snap.champion,
            challenger,
            received,
        )
        try:
            [answered] = await self.batcher.submit([item])
        except Exception as exc:
            log.exception("prediction failed")
            return _json(
                {"detail": f"the model failed on this request ({type(exc).__name__}: {exc})"}, 500
            )
        refused = await _commit_refusal(answered)
        return refused or _answer(answered, batch)

    async def _process(self, items: list[RequestItem]) -> list[Answered]:
        """One batch: model calls in the model thread, then one log commit for all of it."""
        if self._inline(items):
            answers, rows = self._infer(items)
        else:
            loop = asyncio.get_running_loop()
            answers, rows = await loop.run_in_executor(self._model_thread, self._infer, items)
        commit = asyncio.wrap_future(self.writer.submit(rows=rows.plain, blocks=rows.blocks()))
        return [Answered(preds, versions, commit, probs) for preds, versions, probs in answers]

    def _recent_concurrency(self) -> int:
        """The most /predict requests in flight at once in this worker lately (the last
        `_PEAK_WINDOW_S` before the latest peak): the company an idle batcher waits for.
        A caller whose request was just answered sends its next one a moment later, so
        counting only those in flight now would start a batch without them."""
        return self._peak_in_flight

    def _inline(self, items: list[RequestItem]) -> bool:
        """Whether this batch is predicted on the event loop: one small request, and no
        other request in this worker (`inline_predict_records`). The hand-off to the model
        thread and back costs two thread wake-ups per request, most of a 1-record model
        call's own time; with no other request in flight the loop has nothing to do
        meanwhile, and under concurrency the loop stays free to read and check the next."""
        limit = self.settings.inline_predict_records
        return (
            limit > 0
            and len(items) == 1
            and len(items[0].batch) <= limit
            and self._in_flight == 1
            and self.batcher.waiting() == 0
        )

    def _infer(
        self, items: list[RequestItem]
    ) -> tuple[list[tuple[list[Any], list[str], list[Scores]]], _LogRows]:
        """Answer every request (one model call per model and role), shadow where asked.

        Returns each request's (predictions, versions, probabilities) and the log rows.
        """
        groups = _by_model_and_role(items)
        predictions: list[list[Any]] = [[None] * len(item.batch) for item in items]
        probabilities: list[list[Scores]] = [[None] * len(item.batch) for item in items]
        versions: list[list[str]] = [[""] * len(item.batch) for item in items]
        answered: list[list[tuple[LoadedModel, str, _Part, float]]] = [[] for _ in items]
        fallback: list[_Part] = []
        out = (predictions, probabilities, versions, answered)
        for (_, role), (model, parts) in groups.items():
            try:
                preds = self._call(model, role, [part.batch for part in parts])
            except Exception as exc:
                if role == CHALLENGER:  # a failing challenger must not fail callers
                    fallback += parts
                    continue
                model, role, preds = self._fall_back(model, parts, exc)
            self._place(preds, parts, model, role, *out)
        if fallback:
            by_champion: dict[int, tuple[LoadedModel, list[_Part]]] = {}
            for part in fallback:
                champion = items[part.item].champion
                by_champion.setdefault(id(champion), (champion, []))[1].append(part)
            for model, parts in by_champion.values():
                role = CHAMPION
                try:
                    preds = self._call(model, role, [part.batch for part in parts])
                except Exception as exc:
                    model, role, preds = self._fall_back(model, parts, exc)
                self._place(preds, parts, model, role, *out)

        now = time.time()
        rows = _LogRows(items)
        for k, item in enumerate(items):
            answers = (predictions[k], probabilities[k])
            for model, role, part, ready in answered[k]:
                rows.add(
                    k, self._rows(item, part, rows.features[k], answers, model, role, ready, now)
                )
        self._shadow(items, rows, now)
        return list(zip(predictions, versions, probabilities, strict=True)), rows

    def _place(
        self,
        preds: Predicted,
        parts: list[_Part],
        model: LoadedModel,
        role: str,
        predictions: list[list[Any]],
        probabilities: list[list[Scores]],
        versions: list[list[str]],
        answered: list[list[tuple[LoadedModel, str, _Part, float]]],
    ) -> None:
        """Hand one model call's predictions back to the requests they belong to."""
        done = time.perf_counter()
        labels, probs = preds
        start = 0
        for part in parts:
            n = len(part.batch)
            chunk = labels[start : start + n]
            scores: list[Scores] = [None] * n if probs is None else probs[start : start + n]
            start += n
            if part.indices is None:
                predictions[part.item] = chunk
                probabilities[part.item] = scores
                versions[part.item] = [model.version] * n
            else:
                for i, pred, score in zip(part.indices, chunk, scores, strict=True):
                    predictions[part.item][i] = pred
                    probabilities[part.item][i] = score
                    versions[part.item][i] = model.version
            answered[part.item].append((model, role, part, done))

    def _rows(
        self,
        item: RequestItem,
        part: _Part,
        features: list[Any],
        answers: tuple[list[Any], list[Scores]],
        model: LoadedModel,
        role: str,
        ready: float,
        now: float,
    ) -> list[LogRow]:
        """Log rows of the records one model call answered, and one latency observation."""
        latency_s = ready - item.received
        self.metrics.prediction_latency_seconds.labels(
            self.model_name, model.version, role
        ).observe(latency_s)
        latency_ms = latency_s * 1000.0
        batch, name, version = item.batch, self.model_name, model.version
        predictions, scores = answers
        indices = range(len(batch)) if part.indices is None else part.indices
        return [
            (
                batch.request_ids[i],
                batch.entity_ids[i],
                now,
                name,
                version,
                role,
                features[i],
                predictions[i],
                latency_ms,
                scores[i],
            )
            for i in indices
        ]

    def _shadow(self, items: list[RequestItem], rows: _LogRows, now: float) -> None:
        """The challenger predicts shadowed requests for the log only (their rows go to
        `rows`); failures are logged."""
        groups: dict[int, tuple[LoadedModel, list[int]]] = {}
        for k, item in enumerate(items):
            if item.shadow and item.challenger is not None:
                groups.setdefault(id(item.challenger), (item.challenger, []))[1].append(k)
        for model, ks in groups.values():
            try:
                preds = self._call(model, SHADOW, [items[k].batch for k in ks])
            except Exception:
                continue
            done = time.perf_counter()
            start = 0
            labels, probs = preds
            for k in ks:
                item = items[k]
                n = len(item.batch)
                part = _Part(k, None, item.batch)
                chunk = labels[start : start + n]
                scores: list[Scores] = [None] * n if probs is None else probs[start : start + n]
                start += n
                answers = (chunk, scores)
                shadowed = self._rows(
                    item, part, rows.features[k], answers, model, SHADOW, done, now
                )
                rows.add(k, shadowed)

    def _fall_back(
        self, failed: LoadedModel, parts: list[_Part], error: Exception
    ) -> tuple[LoadedModel, str, Predicted]:
        """`previous` answers what the champion failed on; re-raises `error` without one.

        Counted and remembered for /readyz and /metadata; the log rows get role
        ``fallback``. Moving aliases stays the monitor's decision.
        """
        previous = self.follower.snapshot.previous
        if previous is None or previous.version == failed.version:
            raise error
        preds = self._call(previous, FALLBACK, [part.batch for part in parts])
        n = len(preds[0])
        reason = "non_finite" if isinstance(error, NonFinitePredictions) else "error"
        self.metrics.fallbacks.labels(
            self.model_name, failed.version, previous.version, reason
        ).inc(n)
        self.fallbacks += n
        first = self.last_fallback is None or self.last_fallback["failed_version"] != (
            failed.version
        )
        self.last_fallback = {
            "at": time.time(),
            "failed_version": failed.version,
            "answered_by": previous.version,
            "reason": reason,
            "error": f"{type(error).__name__}: {error}"[:300],
            "records": n,
        }
        if first:
            log.error(
                "champion v%s failed (%s: %s); previous v%s answers for it",
                failed.version,
                type(error).__name__,
                error,
                previous.version,
            )
            self._note_fallback(failed.version, previous.version, self.last_fallback["error"])
        return previous, FALLBACK, preds

    def _note_fallback(self, failed: str, answered_by: str, error: str) -> None:
        """Log which champion failed and why (once per episode), off the model thread.

        The monitor names this error when it rolls the champion back; the fallback rows
        themselves go through the writer with the request's other rows.
        """

        def write() -> None:
            try:
                record_fallback_event(self.log, self.model_name, failed, answered_by, error)
            except Exception as exc:  # the rows still count; only the error text is lost
                log.warning("could not log the fallback event: %s", type(exc).__name__)

        threading.Thread(target=write, name="fallback-event", daemon=True).start()

    def _call(self, model: LoadedModel, role: str, batches: list[ValidBatch]) -> Predicted:
        started = time.perf_counter()
        n = sum(len(b) for b in batches)
        try:
            preds = model.predict_batches(batches)
        except Exception as exc:
            self.metrics.model_errors.labels(self.model_name, model.version, role).inc()
            log.warning(
                "model version %s (%s) failed on %d records: %s", model.version, role, n, exc
            )
            raise
        elapsed = time.perf_counter() - started
        self.metrics.model_call_seconds.labels(self.model_name, model.version).observe(elapsed)
        self.metrics.predictions.labels(self.model_name, model.version, role).inc(n)
        return preds

    # -- POST /feedback ----------------------------------------------------------------------
    async def feedback(self, labels: list[dict[str, Any]]) -> JSONResponse:
        """Store ground-truth labels by the label policy (README, "Security").

        Labels are checked against the champion's label rule (422 naming the field, the
        value and what is allowed); only labels for predictions this service logged for
        this model are stored (unknown ids are listed; none known → 422); the first label
        of a prediction counts, later ones are kept as history and ignored.
        """
        snap = self.follower.snapshot
        if snap.champion is None:
            return JSONResponse(
                {"detail": f"{self._not_ready_reason()}: labels cannot be checked yet"},
                status_code=503,
            )
        try:
            valid = snap.champion.label_schema.validate(labels)
        except SchemaError as exc:
            return JSONResponse({"detail": exc.errors}, status_code=422)
        records = [FeedbackRecord(lab.request_id, self.model_name, lab.label) for lab in valid]
        loop = asyncio.get_running_loop()
        try:
            receipt = await loop.run_in_executor(
                None, self.log.store_labels, self.model_name, records
            )
        except Exception as exc:
            log.exception("storing labels failed")
            return JSONResponse(
                {"detail": f"prediction log unavailable, labels not stored: {exc}"},
                status_code=503,
            )
        if not receipt.stored and not receipt.already_labelled:
            return JSONResponse({"detail": self._unknown_ids(valid)}, status_code=422)
        self.metrics.feedback.labels(self.model_name).inc(len(receipt.stored))
        return JSONResponse(
            {
                "accepted": len(receipt.stored),
                "already_labelled": receipt.already_labelled,
                "unknown_request_ids": receipt.unknown,
            }
        )

    def _unknown_ids(self, labels: list[Label]) -> list[dict[str, Any]]:
        """422 detail when no label matches a logged prediction of this model."""
        return [
            {
                "loc": ["labels", i, REQUEST_ID],
                "msg": f"no prediction of model {self.model_name!r} was logged with request id "
                f"{label.request_id!r}: labels are taken only for the request_ids this "
                "service answered with",
                "input": label.request_id,
                "type": "unknown_request_id",
            }
            for i, label in enumerate(labels[:MAX_ERRORS])
        ]

    # -- GET endpoints (served by the gateway middleware) ---------------------------------
    def healthz(self) -> tuple[int, dict[str, Any]]:
        return 200, {"status": "alive", "model_name": self.model_name}

    def readyz(self) -> tuple[int, dict[str, Any]]:
        """200 while /predict can answer (``ready`` or ``degraded``, with the reason), else 503.

        Cheap (flags and the follower's state; no database call): the writer's own probe
        keeps the log's state current.
        """
        status = self.follower.status()
        restarted = self.writer.ensure_running()
        body: dict[str, Any] = {
            "model_name": self.model_name,
            **status,
            "prediction_log": self.writer.status(),
            "fallback": self._fallback_status(),
        }
        if self.follower.snapshot.champion is None:
            return 503, {"status": "not_ready", "reason": self._not_ready_reason(), **body}
        starting, blocking = self.startup.waiting()
        if starting is not None and blocking:
            return 503, {"status": "starting", "reason": starting, **body}
        if restarted or not self.writer.healthy:
            reason = self._log_unavailable()
            if restarted:
                reason = f"the prediction log writer had stopped and was restarted: {reason}"
            return 503, {"status": "not_ready", "reason": reason, **body}
        reasons = [starting] if starting is not None else []
        if not status["registry"]["reachable"]:
            reasons.append(
                "registry unreachable: serving the loaded versions, aliases are not followed"
            )
        wanted = status["aliases"].get(CHAMPION)
        if wanted and wanted != status[CHAMPION] and wanted in status["load_errors"]:
            reasons.append(
                f"champion v{wanted} cannot be loaded ({status['load_errors'][wanted]}); "
                f"serving v{status['champion']}"
            )
        recent = self.last_fallback
        if recent is not None and time.time() - recent["at"] < FALLBACK_RECENT_S:
            reasons.append(
                f"champion v{recent['failed_version']} failed ({recent['error']}); "
                f"previous v{recent['answered_by']} answered for it"
            )
        if not reasons:
            return 200, {"status": "ready", **body}
        return 200, {"status": "degraded", "reason": "; ".join(reasons), **body}

    def _log_unavailable(self) -> str:
        return self.writer.unavailable_reason() or "prediction log unavailable"

    def _fallback_status(self) -> dict[str, Any]:
        last = self.last_fallback
        if last is not None:
            last = {**last, "at": _iso(last["at"])}
        return {"records": self.fallbacks, "last": last}

    def canary_share(self) -> float:
        """The challenger's share now: the registry's tag when usable, else the setting."""
        override = self.follower.share.value
        return self.settings.canary_share if override is None else override

    def _share_source(self) -> dict[str, Any]:
        """Where the effective canary share comes from, for /metadata."""
        override = self.follower.share
        if override.value is not None:
            where = "registry tag" if override.source == "registry" else "cached registry tag"
            out: dict[str, Any] = {"canary_share_from": f"{where} {CANARY_SHARE_TAG}"}
        else:
            out = {"canary_share_from": "setting canary_share (DRIFTLOOP_CANARY_SHARE)"}
        if override.error:
            out["canary_share_error"] = override.error
        return out

    def metadata(self) -> tuple[int, dict[str, Any]]:
        snap = self.follower.snapshot
        share = self.canary_share()
        mode = "champion only"
        if snap.challenger is not None:
            mode = SHADOW if share <= 0 else "canary"
        champion = snap.champion
        return 200, {
            "model_name": self.model_name,
            "bento": self.bento_tag,
            CHAMPION: _describe(champion),
            CHALLENGER: _describe(snap.challenger),
            PREVIOUS: snap.aliases.get(PREVIOUS),
            "aliases": dict(snap.aliases),
            "routing": {
                "canary_share": share,
                **self._share_source(),
                "mode": mode,
                "sticky_by": f"{ENTITY_ID}, else {REQUEST_ID}",
            },
            "schema": {
                "features": champion.schema.describe() if champion else None,
                "checked": champion.schema.checked if champion else None,
                "reserved_keys": [REQUEST_ID, ENTITY_ID],
                "label": champion.label_schema.kind if champion else None,
                "label_rule": champion.label_schema.describe() if champion else None,
            },
            "batching": {
                "max_batch_size": self.settings.max_batch_size,
                "max_latency_ms": self.settings.max_latency_ms,
            },
            "fallback": self._fallback_status(),
            "prediction_log": {"writable": self.writer.healthy},
            "auth_required": self.gateway_config.api_key is not None,
            "feedback_auth": _feedback_auth(self.gateway_config.scopes.get("/feedback")),
            "max_body_bytes": self.gateway_config.max_body_bytes,
            "max_records_per_request": self.gateway_config.max_records,
        }

    def docs_details(self) -> dict[str, Any]:
        """What `/docs.json` adds to BentoML's document (bentos/openapi.py): the model,
        the champion, its features and an example record, the label rule, auth, limits."""
        champion = self.follower.snapshot.champion
        config = self.gateway_config
        auth = (
            "`Authorization: Bearer <DRIFTLOOP_API_KEY>` on /predict and /metadata; "
            f"/feedback: {_feedback_auth(config.scopes.get('/feedback'))}"
            if config.api_key is not None
            else "none (this service runs without an API key)"
        )
        details: dict[str, Any] = {
            "model_name": self.model_name,
            "champion_version": champion.version if champion else None,
            "auth": auth,
            "max_records": config.max_records,
            "max_body_bytes": config.max_body_bytes,
        }
        if champion is not None:
            details["features"] = champion.schema.describe()
            details["example_record"] = _first_example_record(champion)
            rule = champion.label_schema.describe()
            classes = rule.get("classes")
            details["label_rule"] = (
                f"one of {', '.join(map(str, classes))}"
                if classes
                else f"a number (target `{rule.get('target')}`)"
            )
            details["example_label"] = classes[0] if classes else 1.0
        return details

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


async def run_steps_async(steps: Steps[Any]) -> Any:
    """Drive a stepwise computation on the event loop, one step per loop turn (no thread
    fighting the loop for the GIL: what waits between steps runs between steps)."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value
        await asyncio.sleep(0)


def _json(body: Any, status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(jsonio.dumps(body), status, headers, media_type="application/json")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


async def _commit_refusal(answered: Answered) -> Response | None:
    """A 503 when the prediction log did not commit this request's rows (no answer is
    given then), None once they are committed."""
    try:
        # shield: one commit is shared by a whole batch; a caller going away must not
        # cancel it for the others.
        await asyncio.shield(answered.commit)
    except LogUnavailable as exc:  # the message names the condition, never SQL or rows
        return _json({"detail": f"{exc}; no answer was given, retry"}, 503, _RETRY_AFTER)
    except Exception as exc:
        log.error("prediction log commit failed: %s", type(exc).__name__)
        return _json(
            {"detail": f"prediction log unavailable ({type(exc).__name__}); retry"},
            503,
            _RETRY_AFTER,
        )
    return None


def _answer(answered: Answered, batch: ValidBatch) -> Response:
    """/predict's 200: predictions, ids, the version(s) that answered, probabilities."""
    versions = answered.versions
    single = versions[0] if versions.count(versions[0]) == len(versions) else None
    body: dict[str, Any] = {
        "predictions": answered.predictions,
        "request_ids": batch.request_ids,
        "model_version": single,
        "model_versions": versions,
    }
    if any(p is not None for p in answered.probabilities):
        # Classifiers that record a decision rule: {class: probability} per record
        # (null for a record a labels-only version answered). Absent for regressors.
        body["probabilities"] = answered.probabilities
    return _json(body, 200, {"x-model-version": single or ",".join(versions)})


def _by_model_and_role(
    items: list[RequestItem],
) -> dict[tuple[int, str], tuple[LoadedModel, list[_Part]]]:
    """The batch's records grouped for one model call per (model, role): each request's
    records the canary routed to the challenger go to it, the rest to the champion."""
    groups: dict[tuple[int, str], tuple[LoadedModel, list[_Part]]] = {}

    def add(model: LoadedModel, role: str, part: _Part) -> None:
        groups.setdefault((id(model), role), (model, []))[1].append(part)

    for k, item in enumerate(items):
        batch, by = item.batch, item.answer_by
        to_challenger = [i for i, who in enumerate(by or ()) if who == CHALLENGER]
        if not to_challenger or item.challenger is None:
            add(item.champion, CHAMPION, _Part(k, None, batch))
            continue
        keep = [i for i, who in enumerate(by or ()) if who != CHALLENGER]
        if keep:
            add(item.champion, CHAMPION, _Part(k, keep, batch.take(keep)))
        add(item.challenger, CHALLENGER, _Part(k, to_challenger, batch.take(to_challenger)))
    return groups


def gateway_config(settings: ServingSettings) -> GatewayConfig:
    """The gateway's keys and limits from the settings; warns when no API key is set."""
    api_key = settings.api_key.get_secret_value() if settings.api_key else None
    feedback_key = (
        settings.feedback_api_key.get_secret_value() if settings.feedback_api_key else None
    )
    config = GatewayConfig(
        api_key=api_key,
        max_body_bytes=settings.max_body_bytes,
        max_records=settings.max_records_per_request,
        open_paths=tuple(settings.open_paths),
        insecure=settings.insecure,
        scopes={"/feedback": feedback_scope(api_key, feedback_key, settings.feedback_with_api_key)},
        # answered in the gateway, without BentoML's routing and API layer (its metrics,
        # tracing and timeout middlewares sit outside the gateway and still apply)
        handlers={"/predict": "predict", "/feedback": "feedback"},
    )
    if api_key is None:
        log.warning(
            "no API key: /predict, /feedback and /metadata are open to every client "
            "that can reach this port%s; set DRIFTLOOP_API_KEY",
            " (DRIFTLOOP_INSECURE: also from the network)"
            if settings.insecure
            else " on this machine (others get 403)",
        )
    return config


def _feedback_auth(scope: KeyScope | None) -> str:
    """Who may post labels, in words for /metadata (never the keys)."""
    return "anyone (no key configured)" if scope is None else scope.who


def _first_example_record(model: LoadedModel) -> dict[str, Any] | None:
    """The first row of the version's logged input example, as JSON values; None if it
    has none (or it does not pass the version's own schema)."""
    try:
        records = example_records(model.pyfunc)
        if not records:
            return None
        record = records[0]
        model.schema.validate([record])
    except Exception:
        return None
    return record


def _describe(model: LoadedModel | None) -> dict[str, Any] | None:
    if model is None:
        return None
    described: dict[str, Any] = {
        "version": model.version,
        "bento_model": model.tag,
        "labels": model.labels,
    }
    if model.decision is not None and model.scored:
        decision = model.decision
        described["classifier"] = {
            "classes": list(decision.classes),
            "positive_class": decision.positive_class if decision.binary else None,
            "decision_threshold": decision.threshold if decision.binary else None,
            "probabilities": True,
        }
    return described
