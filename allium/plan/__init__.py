"""Test obligations (`allium plan`): the tests a suite must contain for a spec.

Follows the taxonomy of JUXT's `test-generation.md` and the id scheme of
JUXT's `allium plan` (`rule-success.ShipOrder`, `rule-failure.ShipOrder.1`,
`transition-edge.Order.pending.shipped`, ...). Obligations come in source
order, declaration by declaration, then the when-crossing pass
(`when-set`/`when-clear`). Ids are built from names and per-construct
ordinals only, so they are stable across runs and unaffected by edits to
other declarations.

Deliberate deviations from JUXT's `allium plan` 3.5.3:

* Unique ids. JUXT repeats `surface-provides.S` / `surface-exposure.S` once per
  clause; here the first clause keeps the bare id and later ones get an
  ordinal (`surface-provides.S.2`). JUXT's `transition-edge.E.from.to` omits
  the field, so two graphs on one entity can collide; here the field is kept
  for every graph except `status` (`transition-edge.Sub.payment_status.pending.paid`),
  so the common case is unchanged. Any remaining repeat, only possible with
  duplicate declarations, gets `~2`, `~3`.
* Extra categories for taxonomy items JUXT has none for: `rule_branch`
  (`rule-branch.R.n`, one per if/else-if/else branch of a rule-level `if` or an
  ensures `if`, numbered per rule), `rule_chained` (`rule-chained.R.Trigger`,
  one per trigger a rule's ensures emits) and `config_required`
  (`config-required.p`, a config parameter with no default; JUXT emits a
  `config-default` for some of these and drops others). Config overrides of an
  imported module (`alias/config { p: v }`) are `config-default.alias/p`: JUXT
  gives them the bare `config-default.p`, which collides with a local `p`.
* Wider matching where JUXT's patterns miss the construct: entity creation
  counts `X.created(...)` anywhere in an ensures clause (inside `if`, `for`,
  `let`), still one obligation per clause; a temporal trigger may have `now` on
  either side, or inside `and`/`or`; `derived` covers every computed field
  (member chains such as `items.count`, calls, literals, parameterised values),
  not only operator expressions (a bare lowercase name such as `status: done`
  is a one-value enum and is not derived); `projection` includes `-> field`
  maps; a member declared for another entity (`Other.f: ...`) is attributed to
  `Other` (JUXT skips it); `when status in {a, b}` qualifies a field like
  `when status = a | b`; surface clauses inside a surface `for` count; the
  when-crossing pass reads source states from every condition of the first
  `requires` block. `temporal` stays one obligation per rule, as in JUXT, with
  `detail.cases = [before, at, after]`.
* `source_construct` names the declaration with its keyword (`rule ShipOrder`,
  `entity Order`, `config`), so text output groups by declaration; JUXT uses
  bare or dotted names (`ShipOrder`, `Order.status`).
* Spans are those of the construct itself (a field, an edge, a clause) and
  carry file/line/col as well as JUXT's byte `start`/`end`.
* The when-crossing pass walks entities in declaration order (JUXT: HashMap
  order), so output order is deterministic.
"""

from allium.plan.derive import derive_obligations, plan_for
from allium.plan.model import CATEGORIES, ORACLE_CATEGORIES, Obligation
from allium.plan.render import render_json, render_text, to_document

__all__ = [
    "CATEGORIES",
    "ORACLE_CATEGORIES",
    "Obligation",
    "derive_obligations",
    "plan_for",
    "render_json",
    "render_text",
    "to_document",
]
