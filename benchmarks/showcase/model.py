"""An independent reference model of the ledger, written from the specs alone.

The decision rules follow specs/arbiter.allium (rejection reasons checked in
RejectReason declaration order, first match wins) with the limits of
specs/core.allium; the effects follow core.allium's Apply rules. It imports
nothing from generated/ so that it can judge the generated code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_AMOUNT_MINOR = 1_000_000_000_00
MAX_BALANCE_MINOR = 1_000_000_000_000_00
KINDS = ("open", "deposit", "withdraw", "transfer", "close")


@dataclass(frozen=True)
class Envelope:
    client_id: str
    request_id: str
    kind: str
    account_id: str
    counterparty_id: str | None = None
    owner: str | None = None
    amount_minor: int = 0

    @property
    def key(self) -> tuple[str, str]:
        return (self.client_id, self.request_id)

    def body(self) -> dict:
        """The JSON body of POST /v1/requests (node.allium ClientApi)."""
        return {
            "client_id": self.client_id, "request_id": self.request_id, "kind": self.kind,
            "account_id": self.account_id, "counterparty_id": self.counterparty_id,
            "owner": self.owner, "amount_minor": self.amount_minor,
        }


@dataclass(frozen=True)
class Decision:
    verdict: str  # accepted | rejected
    reason: str | None
    account_delta_minor: int
    counterparty_delta_minor: int


@dataclass
class Account:
    owner: str
    status: str = "active"
    balance_minor: int = 0
    version: int = 1


def _reject(reason: str) -> Decision:
    return Decision("rejected", reason, 0, 0)


def _bad_amount(amount: int) -> bool:
    return amount <= 0 or amount > MAX_AMOUNT_MINOR


@dataclass
class Ledger:
    """Accounts plus the money that has entered the system (books.net_inflow_minor)."""

    accounts: dict[str, Account] = field(default_factory=dict)
    net_inflow_minor: int = 0

    def evaluate(self, env: Envelope) -> Decision:
        """arbiter.allium's Evaluate* rules; pure with respect to self."""
        primary = self.accounts.get(env.account_id)
        amount = env.amount_minor
        if env.kind == "open":
            if amount != 0:
                return _reject("invalid_amount")
            return _reject("account_exists") if primary else Decision("accepted", None, 0, 0)
        if env.kind == "close":
            if amount != 0:
                return _reject("invalid_amount")
            problem = self._primary_problem(primary)
            if problem:
                return _reject(problem)
            if primary.balance_minor != 0:
                return _reject("balance_not_zero")
            return Decision("accepted", None, 0, 0)
        if env.kind == "transfer":
            return self._transfer(env, primary)
        if env.kind not in ("deposit", "withdraw"):
            raise ValueError(f"unknown operation kind {env.kind!r}")
        if _bad_amount(amount):
            return _reject("invalid_amount")
        problem = self._primary_problem(primary)
        if problem:
            return _reject(problem)
        if env.kind == "deposit":
            if primary.balance_minor + amount > MAX_BALANCE_MINOR:
                return _reject("balance_limit")
            return Decision("accepted", None, amount, 0)
        if primary.balance_minor < amount:
            return _reject("insufficient_funds")
        return Decision("accepted", None, -amount, 0)

    @staticmethod
    def _primary_problem(primary: Account | None) -> str | None:
        if primary is None:
            return "account_missing"
        return "account_closed" if primary.status == "closed" else None

    def _transfer(self, env: Envelope, primary: Account | None) -> Decision:
        amount = env.amount_minor
        if _bad_amount(amount):
            return _reject("invalid_amount")
        # same_account comes before any snapshot field (arbiter guidance).
        if env.counterparty_id == env.account_id:
            return _reject("same_account")
        problem = self._primary_problem(primary)
        if problem:
            return _reject(problem)
        target = self.accounts.get(env.counterparty_id) if env.counterparty_id else None
        if target is None:
            return _reject("counterparty_missing")
        if target.status == "closed":
            return _reject("counterparty_closed")
        if primary.balance_minor < amount:
            return _reject("insufficient_funds")
        if target.balance_minor + amount > MAX_BALANCE_MINOR:
            return _reject("balance_limit")
        return Decision("accepted", None, -amount, amount)

    def apply(self, env: Envelope, d: Decision, client_id: str) -> list[str]:
        """core.allium's Apply rules. Returns the impossible states the effect
        would create (an Apply rule whose `requires` fails), applying nothing then."""
        if d.verdict != "accepted":
            return []
        acct = self.accounts.get(env.account_id)
        if env.kind == "open":
            if acct is not None:
                return [f"open of existing account {env.account_id}"]
            self.accounts[env.account_id] = Account(owner=env.owner or client_id)
            return []
        if acct is None:
            return [f"{env.kind} applied to missing account {env.account_id}"]
        if env.kind == "close":
            if acct.status != "active":
                return [f"close of closed account {env.account_id}"]
            acct.status = "closed"
            acct.version += 1
            return []
        if env.kind == "transfer":
            target = self.accounts.get(env.counterparty_id or "")
            if target is None:
                return [f"transfer to missing account {env.counterparty_id}"]
            acct.balance_minor += d.account_delta_minor
            target.balance_minor += d.counterparty_delta_minor
            acct.version += 1
            target.version += 1
            return []
        acct.balance_minor += d.account_delta_minor
        acct.version += 1
        self.net_inflow_minor += d.account_delta_minor
        return []
