"""Compare-and-swap for alias moves, through MLflow alone.

MLflow has no atomic compare-and-swap on aliases, but it has one write that only
one writer can win: a run parameter is immutable. `log_param(run, key, value)`
inserts a row keyed by (run, key); a second writer with a different value gets
INVALID_PARAMETER_VALUE, the same writer repeating the same value succeeds. The
server's database decides, so this holds across processes and machines.

Each model has one *ledger* run in its ``<model>-decisions`` experiment (its id
is the experiment tag ``driftloop.ledger_run_id``). A move takes the next
generation number N by logging ``move.N`` = its claim (decision id, aliases
before, aliases after); when its aliases are written it logs ``done.N``. A mover
only claims N+1 after it has seen ``done.N`` (or waited `wait_s` for it) and
compared the live aliases with what its caller expected, so two movers that
read the same state cannot both move: one of them loses the claim, re-reads and
refuses. See README "Reliability" for what is left (writers that bypass the
ledger, a mover that outlives its lease).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException

LEDGER_TAG = "driftloop.ledger_run_id"
_CLAIM = re.compile(r"^move\.(\d+)$")
_DONE = re.compile(r"^done\.(\d+)$")
_DECISION_ID = re.compile(r"^[A-Za-z0-9._:-]{1,200}$")
POLL_S = 0.1
OK = "ok"


def new_decision_id(prefix: str = "d") -> str:
    """A fresh decision id; callers that may retry create it once and pass it along."""
    return f"{prefix}-{uuid.uuid4().hex}"


def check_decision_id(decision_id: str) -> str:
    if not _DECISION_ID.match(decision_id):
        raise ValueError(
            f"decision id {decision_id!r} is not usable: 1-200 letters, digits or . _ : -"
        )
    return decision_id


@dataclass(frozen=True)
class Claim:
    """What generation N of the ledger says: who moved, from which aliases to which."""

    decision_id: str
    action: str
    actor: str
    before: dict[str, str | None]
    plan: dict[str, str | None]  # alias -> new version (None = clear)
    at: str

    def encode(self) -> str:
        body = {
            "id": self.decision_id,
            "action": self.action,
            "actor": self.actor[:200],
            "before": self.before,
            "plan": self.plan,
            "at": self.at,
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":"))

    @classmethod
    def decode(cls, value: str) -> Claim:
        body = json.loads(value)
        return cls(
            decision_id=body["id"],
            action=body["action"],
            actor=body.get("actor", "?"),
            before=dict(body.get("before", {})),
            plan=dict(body.get("plan", {})),
            at=body.get("at", ""),
        )


@dataclass(frozen=True)
class LedgerState:
    """The ledger read at one moment: claims and outcomes by generation."""

    claims: dict[int, Claim] = field(default_factory=dict)
    outcomes: dict[int, str] = field(default_factory=dict)

    @property
    def generation(self) -> int:
        """The newest claimed generation (0 before the first move)."""
        return max(self.claims, default=0)

    @property
    def settled(self) -> bool:
        """No move is in progress: the newest claim has its outcome."""
        return self.generation == 0 or self.generation in self.outcomes

    def find(self, decision_id: str) -> tuple[int, Claim] | None:
        """The newest generation claimed by `decision_id`."""
        mine = [(n, c) for n, c in self.claims.items() if c.decision_id == decision_id]
        return max(mine, key=lambda item: item[0]) if mine else None


def parse_ledger(params: dict[str, str]) -> LedgerState:
    """The ledger's params (move.N / done.N) as claims and outcomes; other keys ignored."""
    claims: dict[int, Claim] = {}
    outcomes: dict[int, str] = {}
    for key, value in params.items():
        if match := _CLAIM.match(key):
            try:
                claims[int(match.group(1))] = Claim.decode(value)
            except (ValueError, KeyError, TypeError):
                continue  # not ours: a hand-written param never blocks the ledger
        elif match := _DONE.match(key):
            outcomes[int(match.group(1))] = value
    return LedgerState(claims, outcomes)


def claim_key(generation: int) -> str:
    return f"move.{generation:08d}"


def done_key(generation: int) -> str:
    return f"done.{generation:08d}"


class MoveLedger:
    """The ledger run of one model: read it, claim the next generation, mark it done."""

    def __init__(
        self, client: MlflowClient, experiment: Any, model_name: str, wait_s: float
    ) -> None:
        self.client = client
        self.experiment = experiment  # PromotionHistory: owns the decisions experiment
        self.model_name = model_name
        self.wait_s = wait_s
        self._run_id: str | None = None

    def run_id(self) -> str:
        """The ledger run's id; created with the decisions experiment, found afterwards."""
        if self._run_id is not None:
            return self._run_id
        experiment_id, created = self.experiment.ensure_experiment()
        found = self._tagged(experiment_id)
        if found is None and not created:
            # Another process may have created the experiment a moment ago: give it time
            # to tag its ledger run rather than start a second one.
            deadline = time.monotonic() + min(self.wait_s, 5.0)
            while found is None and time.monotonic() < deadline:
                time.sleep(POLL_S)
                found = self._tagged(experiment_id)
        if found is None:
            found = self._create(experiment_id, created)
        self._run_id = found
        return found

    def _tagged(self, experiment_id: str) -> str | None:
        return self.client.get_experiment(experiment_id).tags.get(LEDGER_TAG)

    def _create(self, experiment_id: str, created: bool) -> str:
        run = self.client.create_run(
            experiment_id,
            tags={
                "mlflow.runName": "alias-move ledger",
                "driftloop.kind": "ledger",
                "mlflow.note.content": (
                    f"Compare-and-swap ledger of {self.model_name}'s alias moves: "
                    "param move.N is the claim of move N, done.N its outcome. Do not edit."
                ),
            },
        )
        run_id = run.info.run_id
        self.client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))
        if not created and self._tagged(experiment_id) is not None:
            self.client.delete_run(run_id)  # someone else's ledger won meanwhile
            return str(self._tagged(experiment_id))
        self.client.set_experiment_tag(experiment_id, LEDGER_TAG, run_id)
        if not created:
            # A pre-existing experiment without a ledger: two first movers could both
            # get here; the tag's last writer wins and both adopt it after a pause.
            time.sleep(0.5)
            winner = self._tagged(experiment_id) or run_id
            if winner != run_id:
                self.client.delete_run(run_id)
            return winner
        return run_id

    def read(self) -> LedgerState:
        run = self.client.get_run(self.run_id())
        return parse_ledger(dict(run.data.params))

    def read_settled(self, own_decision: str | None = None) -> LedgerState:
        """The ledger once the newest move has finished, or after waiting `wait_s` for it.

        A claim without an outcome after `wait_s` is taken as abandoned (its mover
        died); a later mover then compares the live aliases as usual. A claim of
        `own_decision` is never waited for: it is this caller's own earlier attempt.
        """
        deadline = time.monotonic() + self.wait_s
        state = self.read()
        while not state.settled and time.monotonic() < deadline:
            newest = state.claims[state.generation]
            if own_decision is not None and newest.decision_id == own_decision:
                break
            time.sleep(POLL_S)
            state = self.read()
        return state

    def claim(self, generation: int, claim: Claim) -> Claim:
        """Try to take `generation` for `claim`; returns the claim that holds it.

        The holder is `claim` itself when this call won, an earlier attempt of the
        same decision when a retry repeats it, or another decision when it lost.
        """
        try:
            self.client.log_param(self.run_id(), claim_key(generation), claim.encode())
        except MlflowException as exc:
            if getattr(exc, "error_code", "") != "INVALID_PARAMETER_VALUE":
                raise
            held = self.read().claims.get(generation)
            if held is None:
                raise  # a different problem (value too long...): let the caller see it
            return held
        return claim

    def finish(self, generation: int, outcome: str) -> None:
        """Record how move `generation` ended (`ok` or `failed: ...`); first outcome stays."""
        try:
            self.client.log_param(self.run_id(), done_key(generation), outcome[:500])
        except MlflowException as exc:
            if getattr(exc, "error_code", "") != "INVALID_PARAMETER_VALUE":
                raise
