"""Every construct of Allium v1-v3 (and allium's resolved questions), with AST assertions.

Fixture tables in the style of sqlglot's tests: each row is a source snippet
and what its tree must look like.  Snippets get a `-- allium: 3` marker unless
they carry their own; `show()` renders expressions as S-expressions so a row
states the tree it expects, e.g. `(or a (and b c))`.
"""

from __future__ import annotations

import pytest

from allium import ast
from allium.syntax import parse_text

from .conftest import errors, parse_ok, src
from .sexpr import show


def only(module: ast.Module, kind: type = ast.Decl):
    decls = [d for d in module.decls if isinstance(d, kind)]
    assert len(decls) == 1, decls
    return decls[0]


def fields(decl: ast.EntityDecl) -> dict[str, tuple[str, str]]:
    return {f.name: (f.kind, show(f.value)) for f in decl.fields}


def clauses(rule: ast.RuleDecl, kind: type) -> list:
    return [c for c in rule.all_clauses() if isinstance(c, kind)]


# ---------------------------------------------------------------- module header, version marker


@pytest.mark.parametrize("version", [1, 2, 3])
def test_version_marker_supported(version):
    result = parse_text(f"-- allium: {version}\nentity A {{\n    x: String\n}}\n")
    assert result.module is not None
    assert result.module.version == version
    assert result.module.version_span is not None
    assert result.module.version_span.start.line == 1
    assert result.diagnostics == ()


def test_version_marker_missing_warns_but_parses():
    result = parse_text("entity A {\n    x: String\n}\n")
    assert result.module is not None and result.module.version is None
    codes = [(d.code, d.severity.value) for d in result.diagnostics]
    assert codes == [("allium.version.missing", "warning")]


def test_version_marker_unsupported_is_an_error():
    result = parse_text("-- allium: 9\nentity A {\n    x: String\n}\n")
    [diag] = result.diagnostics
    assert (diag.code, diag.severity.value) == ("allium.version.unsupported", "error")
    assert "9" in diag.message
    assert (diag.span.start.line, diag.span.start.column) == (1, 12)


MODULE_CASES = [
    (
        "module_header",
        """
        module billing.invoices
        """,
        lambda m: show_decl(only(m, ast.ModuleDecl)) == "billing.invoices",
    ),
    (
        "use_with_alias",
        """
        use "github.com/org/core/abc123" as core
        """,
        lambda m: (only(m, ast.UseDecl).name, only(m, ast.UseDecl).path) == ("core", "github.com/org/core/abc123"),
    ),
    (
        "use_without_alias",
        """
        use "./shared.allium"
        """,
        lambda m: (only(m, ast.UseDecl).name, only(m, ast.UseDecl).path) == ("", "./shared.allium"),
    ),
    (
        "given",
        """
        given {
            pipeline: HiringPipeline
            now_source: Clock, region: String
        }
        """,
        lambda m: [(b.name, show(b.type)) for b in only(m, ast.GivenDecl).bindings]
        == [("pipeline", "HiringPipeline"), ("now_source", "Clock"), ("region", "String")],
    ),
]


def show_decl(decl: ast.Decl) -> str:
    return decl.name


@pytest.mark.parametrize("source,check", [c[1:] for c in MODULE_CASES], ids=[c[0] for c in MODULE_CASES])
def test_module_level(source, check):
    assert check(parse_ok(source))


# ---------------------------------------------------------------- entities, values, variants, enums


ENTITY_CASES = [
    (
        "external_entity",
        """
        external entity Candidate {
            name: String
            email: Email
        }
        """,
        lambda e: e.kind == "external" and fields(e) == {"name": ("type", "String"), "email": ("type", "Email")},
    ),
    (
        "value_type",
        """
        value TimeRange {
            start: Timestamp
            end: Timestamp
            duration: end - start
        }
        """,
        lambda e: e.kind == "value"
        and fields(e) == {
            "start": ("type", "Timestamp"),
            "end": ("type", "Timestamp"),
            "duration": ("derived", "(- end start)"),
        },
    ),
    (
        "field_types_optional_generic",
        """
        entity Order {
            note: String?
            tags: Set<String>
            lines: List<OrderLine>
            lookup: Map<String, Integer>
            owner: core/User
        }
        """,
        lambda e: fields(e)
        == {
            "note": ("type", "(? String)"),
            "tags": ("type", "Set<String>"),
            "lines": ("type", "List<OrderLine>"),
            "lookup": ("type", "Map<String, Integer>"),
            "owner": ("type", "core/User"),
        },
    ),
    (
        "inline_enum_field",
        """
        entity Order {
            status: pending | shipped | delivered
        }
        """,
        lambda e: fields(e) == {"status": ("enum", "(| (| pending shipped) delivered)")},
    ),
    (
        "relationships",
        """
        entity Candidate {
            applications: Application with candidate = this
            primary: Application with candidate = this and primary = true
        }
        """,
        lambda e: fields(e)
        == {
            "applications": ("relationship", "(with Application (= candidate this))"),
            "primary": ("relationship", "(with Application (and (= candidate this) (= primary true)))"),
        },
    ),
    (
        "projections",
        """
        entity Candidate {
            active: applications where status = active
            emails: applications where status = active -> email
            names: interviews -> interviewer
        }
        """,
        lambda e: fields(e)
        == {
            "active": ("projection", "(where applications (= status active))"),
            "emails": ("projection", "(-> (where applications (= status active)) email)"),
            "names": ("projection", "(-> interviews interviewer)"),
        },
    ),
    (
        "derived_values",
        """
        entity Interview {
            is_overdue: now > deadline and status != completed
            total: lines.sum(l => l.amount)
            label:
                if urgent: "urgent"
                else: "normal"
        }
        """,
        lambda e: fields(e)
        == {
            "is_overdue": ("derived", "(and (> now deadline) (!= status completed))"),
            "total": ("derived", "lines.sum((l => l.amount))"),
            "label": ("derived", '(if [urgent "urgent"] else "normal")'),
        },
    ),
    (
        "parameterised_derived_value",
        """
        entity Slot {
            overlaps(other): start < other.end and other.start < end
            can_book(user, at): user.active and at < deadline
        }
        """,
        lambda e: [(f.name, f.kind, f.params, show(f.value)) for f in e.fields]
        == [
            ("overlaps", "derived", ("other",), "(and (< start other.end) (< other.start end))"),
            ("can_book", "derived", ("user", "at"), "(and user.active (< at deadline))"),
        ],
    ),
    (
        "when_qualified_fields",
        """
        entity Order {
            status: pending | shipped | delivered
            shipped_at: Timestamp when status = shipped | delivered
            tracking: String? when status = shipped
        }
        """,
        lambda e: [(f.name, f.kind, show(f.when)) for f in e.fields]
        == [
            ("status", "enum", "None"),
            ("shipped_at", "type", "(= status (| shipped delivered))"),
            ("tracking", "type", "(= status shipped)"),
        ],
    ),
    (
        "transitions_graph",
        """
        entity Order {
            status: pending | paid | shipped | cancelled
            transitions status {
                pending -> paid
                paid -> shipped
                pending -> cancelled, paid -> cancelled
                terminal: shipped, cancelled
            }
        }
        """,
        lambda e: [
            (t.field, [(x.source, x.target) for x in t.edges], t.terminals) for t in e.transitions
        ]
        == [
            (
                "status",
                [("pending", "paid"), ("paid", "shipped"), ("pending", "cancelled"), ("paid", "cancelled")],
                ("shipped", "cancelled"),
            )
        ],
    ),
    (
        "entity_level_invariant",
        """
        entity Account {
            balance: Decimal
            invariant NonNegative { balance >= 0 }
        }
        """,
        lambda e: [(i.name, [show(s) for s in i.body]) for i in e.invariants] == [("NonNegative", ["(>= balance 0)"])],
    ),
    (
        "sum_type_discriminator",
        """
        entity Notification {
            user: User
            kind: MentionNotification | ReplyNotification
        }
        """,
        lambda e: e.field("kind").kind == "variants" and e.field("kind").value.op == "|",
    ),
    (
        "reverse_relationship",
        """
        entity Team {
            User.teams: Team with members includes this
        }
        """,
        lambda e: (e.fields[0].owner, e.fields[0].name, e.fields[0].kind) == ("User", "teams", "relationship"),
    ),
]


@pytest.mark.parametrize("source,check", [c[1:] for c in ENTITY_CASES], ids=[c[0] for c in ENTITY_CASES])
def test_entities(source, check):
    assert check(only(parse_ok(source), ast.EntityDecl))


def test_variants():
    module = parse_ok(
        """
        entity Notification {
            kind: MentionNotification | ReplyNotification
        }

        variant MentionNotification : Notification {
            comment: Comment
        }

        variant ReplyNotification : Notification {
            reply: Reply
        }
        """
    )
    base, *variants = module.entities
    assert base.field("kind").kind == "variants"
    assert [(v.name, v.kind, v.base, fields(v)) for v in variants] == [
        ("MentionNotification", "variant", "Notification", {"comment": ("type", "Comment")}),
        ("ReplyNotification", "variant", "Notification", {"reply": ("type", "Reply")}),
    ]


ENUM_CASES = [
    ("pipe_separated", "enum Status { pending | active | closed }", ("pending", "active", "closed")),
    ("comma_separated", "enum Status { pending, active, closed }", ("pending", "active", "closed")),
    (
        "newline_separated",
        """
        enum Status {
            pending
            active
            closed
        }
        """,
        ("pending", "active", "closed"),
    ),
    (
        "newline_pipes",
        """
        enum Status {
            pending
            | active
            | closed
        }
        """,
        ("pending", "active", "closed"),
    ),
    ("backtick_literals", "enum Locale { `en-GB` | `fr-FR` | plain }", ("`en-GB`", "`fr-FR`", "plain")),
    ("empty", "enum Nothing {}", ()),
]


@pytest.mark.parametrize("source,values", [c[1:] for c in ENUM_CASES], ids=[c[0] for c in ENUM_CASES])
def test_enums(source, values):
    enum = only(parse_ok(source), ast.EnumDecl)
    assert enum.values == values


def test_inline_backtick_enum_field():
    entity = only(parse_ok("entity Doc {\n    locale: `en-GB` | `de-DE`\n}"), ast.EntityDecl)
    assert entity.field("locale").kind == "enum"
    assert show(entity.field("locale").value) == "(| `en-GB` `de-DE`)"


# ---------------------------------------------------------------- config, defaults


def test_config_typed_defaults_and_expressions():
    config = only(
        parse_ok(
            """
            config {
                min_length: Integer = 12
                lockout: Duration = 15.minutes
                instance_id: String
                extended: Duration = core/config.base_timeout * 2
                retry_limit: Integer = max_attempts - 1
                ratio: Decimal = (base + 1) * 2
            }
            """
        ),
        ast.ConfigDecl,
    )
    assert config.name == "config"
    assert [(p.name, show(p.type), show(p.default)) for p in config.params] == [
        ("min_length", "Integer", "12"),
        ("lockout", "Duration", "15.minutes"),
        ("instance_id", "String", "None"),
        ("extended", "Duration", "(* core/config.base_timeout 2)"),
        ("retry_limit", "Integer", "(- max_attempts 1)"),
        ("ratio", "Decimal", "(* (+ base 1) 2)"),
    ]
    assert config.params[1].default.kind == "duration"


def test_config_overrides():
    config = only(
        parse_ok(
            """
            core/config {
                max_attempts: 5
                publish_delay: 8.hours
            }
            """
        ),
        ast.ConfigDecl,
    )
    assert config.name == "core/config"
    assert [(p.name, p.type, show(p.default)) for p in config.params] == [
        ("max_attempts", None, "5"),
        ("publish_delay", None, "8.hours"),
    ]


DEFAULT_CASES = [
    (
        'default InterviewType all_in_one = { name: "All in one", duration: 75.minutes }',
        ("all_in_one", "InterviewType", '{name: "All in one", duration: 75.minutes}'),
    ),
    (
        """
        default Role editor = {
            name: "editor",
            permissions: { "documents.write" },
            inherits_from: viewer
        }
        """,
        ("editor", "Role", '{name: "editor", permissions: {"documents.write"}, inherits_from: viewer}'),
    ),
]


@pytest.mark.parametrize("source,expected", DEFAULT_CASES)
def test_defaults(source, expected):
    decl = only(parse_ok(source), ast.DefaultDecl)
    assert (decl.name, decl.type, show(decl.value)) == expected


# ---------------------------------------------------------------- rules


WHEN_CASES = [
    ("external_stimulus", "when: CandidateApplies(candidate, role)", None, "CandidateApplies(candidate, role)"),
    ("transitions_to", "when: order: Order.status transitions_to shipped", "order", "(transitions_to Order.status shipped)"),
    ("becomes", "when: order: Order.status becomes cancelled", "order", "(becomes Order.status cancelled)"),
    ("temporal", "when: invite: Invitation.expires_at <= now", "invite", "(<= Invitation.expires_at now)"),
    (
        "temporal_with_offset",
        "when: slot: Slot.start_time - 24.hours <= now",
        "slot",
        "(<= (- Slot.start_time 24.hours) now)",
    ),
    ("created", "when: order: Order.created", "order", "Order.created"),
    (
        "chained",
        "when: ShipmentDispatched(order) or ShipmentSplit(order)",
        None,
        "(or ShipmentDispatched(order) ShipmentSplit(order))",
    ),
    (
        "chained_state",
        "when: order: Order.status transitions_to paid and order.total > 100",
        "order",
        "(and (transitions_to Order.status paid) (> order.total 100))",
    ),
]


@pytest.mark.parametrize("line,binding,trigger", [c[1:] for c in WHEN_CASES], ids=[c[0] for c in WHEN_CASES])
def test_when_binding_forms(line, binding, trigger):
    rule = only(parse_ok(f"rule R {{\n    {line}\n    ensures: Done()\n}}"), ast.RuleDecl)
    assert (rule.when.binding, show(rule.when.trigger)) == (binding, trigger)


def test_rule_requires_let_ensures_inline_and_block():
    rule = only(
        parse_ok(
            """
            rule ScheduleInterview {
                when: ScheduleRequested(candidacy, slot)
                requires: candidacy.status = active
                requires:
                    slot.is_free
                    not exists Interview{slot: slot}
                let interviewers = slot.panel -> interviewer
                ensures: candidacy.status = scheduled
                ensures:
                    let interview = Interview.created(candidacy: candidacy, slot: slot)
                    interview.status = pending
                    for person in interviewers:
                        InterviewInvite(person, interview)
                    if slot.is_remote:
                        interview.link = VideoLink.created()
                    else if slot.room != null:
                        interview.room = slot.room
                    else:
                        RoomRequested(interview)
            }
            """
        ),
        ast.RuleDecl,
    )
    assert [show(c) for r in rule.requires for c in r.conditions] == [
        "(= candidacy.status active)",
        "slot.is_free",
        "(not (exists Interview{slot: slot}))",
    ]
    [let] = clauses(rule, ast.LetClause)
    assert (let.name, show(let.value)) == ("interviewers", "(-> slot.panel interviewer)")
    inline, block = rule.ensures
    assert [show(s) for s in inline.body] == ["(= candidacy.status scheduled)"]
    assert [show(s) for s in block.body] == [
        "(let interview Interview.created(candidacy: candidacy, slot: slot))",
        "(= interview.status pending)",
        "(for person in interviewers: InterviewInvite(person, interview))",
        "(if [slot.is_remote: (= interview.link VideoLink.created())]"
        " [(!= slot.room null): (= interview.room slot.room)]"
        " [else: RoomRequested(interview)])",
    ]


def test_rule_level_for_and_if():
    rule = only(
        parse_ok(
            """
            rule Sweep {
                when: DailyTick()
                for order in Orders where status = pending:
                    requires: order.age > 7.days
                    ensures: order.status = expired
                if config.notify:
                    ensures: Notified(admins)
                else if config.log:
                    ensures: Logged()
                else:
                    ensures: Ignored()
            }
            """
        ),
        ast.RuleDecl,
    )
    loop = clauses(rule, ast.ForClause)[0]
    assert loop.names == ("order",) and show(loop.source) == "(where Orders (= status pending))"
    assert [type(c).__name__ for c in loop.clauses] == ["RequiresClause", "EnsuresClause"]
    branch = clauses(rule, ast.IfClause)[0]
    assert [show(b.condition) for b in branch.branches] == ["config.notify", "config.log", "None"]
    assert [show(b.clauses[0].body[0]) for b in branch.branches] == ["Notified(admins)", "Logged()", "Ignored()"]


def test_trigger_emissions_created_and_not_exists():
    rule = only(
        parse_ok(
            """
            rule Apply {
                when: CandidateApplies(email, role)
                requires: not exists Candidate{email: email}
                ensures:
                    Candidate.created(email: email, applied_for: role)
                    ApplicationReceived(email: email)
                    Audit.created()
            }
            """
        ),
        ast.RuleDecl,
    )
    assert show(rule.requires[0].conditions[0]) == "(not (exists Candidate{email: email}))"
    assert [show(s) for s in rule.ensures[0].body] == [
        "Candidate.created(email: email, applied_for: role)",
        "ApplicationReceived(email: email)",
        "Audit.created()",
    ]


def test_block_form_if_expression_in_let():
    """JUXT's parser lets `if` branches sit on their own indented lines (parse_branch_body)."""
    rule = only(
        parse_ok(
            """
            rule Link {
                when: Report(policy)
                let linked =
                    if policy != null:
                        find_claim(policy)
                    else if policy = draft:
                        draft_claim
                    else:
                        null
                ensures:
                    let note =
                        if linked = null:
                            "orphan"
                        else:
                            "linked"
                    Recorded(linked, note)
            }
            """
        ),
        ast.RuleDecl,
    )
    [let] = clauses(rule, ast.LetClause)
    assert show(let.value) == "(if [(!= policy null) find_claim(policy)] [(= policy draft) draft_claim] else null)"
    assert [show(s) for s in rule.ensures[0].body] == [
        '(let note (if [(= linked null) "orphan"] else "linked"))',
        "Recorded(linked, note)",
    ]


# ---------------------------------------------------------------- invariants


INVARIANT_CASES = [
    ("expression", "invariant Positive { Accounts.all(a => a.balance >= 0) }", ["Accounts.all((a => (>= a.balance 0)))"]),
    (
        "nested_for",
        """
        invariant UniqueSlots {
            for a in Interviews:
                for b in Interviews:
                    a != b implies a.slot != b.slot
        }
        """,
        ["(for a in Interviews: (for b in Interviews: (implies (!= a b) (!= a.slot b.slot))))"],
    ),
    (
        "inline_for",
        """
        invariant ShippedHaveDates {
            for o in Orders where status = shipped: o.shipped_at != null
        }
        """,
        ["(for o in (where Orders (= status shipped)): (!= o.shipped_at null))"],
    ),
    (
        "implies_and_let",
        """
        invariant Capacity {
            let used = Bookings.count
            used > 0 implies used <= config.capacity
        }
        """,
        ["(let used Bookings.count)", "(implies (> used 0) (<= used config.capacity))"],
    ),
]


@pytest.mark.parametrize("source,body", [c[1:] for c in INVARIANT_CASES], ids=[c[0] for c in INVARIANT_CASES])
def test_top_level_invariants(source, body):
    inv = only(parse_ok(source), ast.InvariantDecl)
    assert [show(s) for s in inv.body] == body


# ---------------------------------------------------------------- contracts, actors, surfaces


def test_contract_signatures_and_prose_annotations():
    contract = only(
        parse_ok(
            """
            contract Codec {
                serialize: (value: Any) -> ByteArray
                deserialize: (bytes: ByteArray, strict: Boolean?) -> Any
                health: () -> Set<Status>

                @invariant Roundtrip
                    -- deserialize(serialize(value)) produces a value
                    -- equivalent to the original.

                @guidance
                    -- Handle versioned payloads.
            }
            """
        ),
        ast.ContractDecl,
    )
    assert [(s.name, [(p.name, show(p.type)) for p in s.params], show(s.returns)) for s in contract.signatures] == [
        ("serialize", [("value", "Any")], "ByteArray"),
        ("deserialize", [("bytes", "ByteArray"), ("strict", "(? Boolean)")], "Any"),
        ("health", [], "Set<Status>"),
    ]
    assert [(a.kind, a.name, a.prose) for a in contract.annotations] == [
        (
            "invariant",
            "Roundtrip",
            "deserialize(serialize(value)) produces a value\nequivalent to the original.",
        ),
        ("guidance", None, "Handle versioned payloads."),
    ]


ACTOR_CASES = [
    (
        """
        actor Interviewer {
            identified_by: User where role = interviewer
        }
        """,
        [("identified_by", "(where User (= role interviewer))")],
    ),
    (
        """
        actor WorkspaceAdmin {
            within: Workspace
            identified_by: User where WorkspaceMembership{user: this, workspace: within}.can_admin = true
        }
        """,
        [
            ("within", "Workspace"),
            ("identified_by", "(where User (= WorkspaceMembership{user: this, workspace: within}.can_admin true))"),
        ],
    ),
]


@pytest.mark.parametrize("source,expected", ACTOR_CASES)
def test_actors(source, expected):
    actor = only(parse_ok(source), ast.ActorDecl)
    assert [(n, show(e)) for n, e in actor.clauses] == expected


def test_surface_everything():
    surface = only(
        parse_ok(
            """
            surface InterviewerDashboard {
                facing viewer: Interviewer
                context assignment: SlotConfirmation where interviewer = viewer
                let slot = assignment.slot

                exposes:
                    slot.time
                    assignment.status when assignment.status != cancelled

                provides:
                    ConfirmSlot(viewer, slot) when assignment.status = pending
                    DeclineSlot(viewer, slot)

                related:
                    CandidateProfile(slot.candidacy.candidate)

                timeout:
                    SlotExpired(slot) when slot.start_time <= now

                contracts:
                    demands Codec
                    fulfils EventSubmitter

                @guarantee AllOperationsIdempotent
                    -- All operations are safe to retry.

                @guidance
                    -- Show the next slot first.

                for other in slot.other_confirmations:
                    exposes:
                        other.interviewer.name
            }
            """
        ),
        ast.SurfaceDecl,
    )
    m = surface.members
    facing, context, let = m[0], m[1], m[2]
    assert (facing.binding, show(facing.type)) == ("viewer", "Interviewer")
    assert (context.binding, show(context.type)) == ("assignment", "(where SlotConfirmation (= interviewer viewer))")
    assert isinstance(let, ast.SurfaceLet) and (let.name, show(let.value)) == ("slot", "assignment.slot")
    blocks = [x for x in m if isinstance(x, ast.SurfaceBlock)]
    assert [(b.kind, [(show(i.expr), show(i.when)) for i in b.items]) for b in blocks] == [
        ("exposes", [("slot.time", "None"), ("assignment.status", "(!= assignment.status cancelled)")]),
        (
            "provides",
            [("ConfirmSlot(viewer, slot)", "(= assignment.status pending)"), ("DeclineSlot(viewer, slot)", "None")],
        ),
        ("related", [("CandidateProfile(slot.candidacy.candidate)", "None")]),
        ("timeout", [("SlotExpired(slot)", "(<= slot.start_time now)")]),
    ]
    [contracts] = [x for x in m if isinstance(x, ast.ContractsBlock)]
    assert [(r.direction, r.name) for r in contracts.refs] == [("demands", "Codec"), ("fulfils", "EventSubmitter")]
    assert [(a.kind, a.name, a.prose) for a in surface.annotations] == [
        ("guarantee", "AllOperationsIdempotent", "All operations are safe to retry."),
        ("guidance", None, "Show the next slot first."),
    ]
    [loop] = [x for x in m if isinstance(x, ast.SurfaceFor)]
    assert loop.names == ("other",) and show(loop.source) == "slot.other_confirmations"
    assert [show(i.expr) for i in loop.members[0].items] == ["other.interviewer.name"]


def test_surface_facing_without_binding_and_inline_exposes():
    surface = only(
        parse_ok(
            """
            surface Public {
                facing Visitor
                exposes: Catalogue.items, Catalogue.prices
            }
            """
        ),
        ast.SurfaceDecl,
    )
    facing, block = surface.members
    assert (facing.binding, show(facing.type)) == (None, "Visitor")
    assert [show(i.expr) for i in block.items] == ["Catalogue.items", "Catalogue.prices"]


# ---------------------------------------------------------------- deferred, questions, guidance


def test_deferred_with_quoted_hint_and_see_comment():
    module = parse_ok(
        """
        deferred InterviewerMatching.suggest "see: detailed/matching.allium"
        deferred Pricing.discounts    -- see: pricing.allium
        deferred Tax
        """
    )
    assert [(d.name, d.hint) for d in module.of_type(ast.DeferredDecl)] == [
        ("InterviewerMatching.suggest", "see: detailed/matching.allium"),
        ("Pricing.discounts", "pricing.allium"),
        ("Tax", None),
    ]


def test_open_question():
    q = only(parse_ok('open question "Should admins see deleted accounts?"'), ast.OpenQuestion)
    assert q.name == "Should admins see deleted accounts?"


RESOLVED = """
resolved question "How do replicas compare outputs?" {
    answer: "Each replica sends a SHA-256 digest of its canonical outcome encoding."
    rationale:
        -- Comparing fixed-size digests keeps agreement cost constant
        -- whatever the payload size.
}
"""


def test_resolved_question_string_answer_prose_rationale():
    q = only(parse_ok(RESOLVED), ast.ResolvedQuestion)
    assert q.name == "How do replicas compare outputs?"
    assert q.answer == "Each replica sends a SHA-256 digest of its canonical outcome encoding."
    assert q.rationale == "Comparing fixed-size digests keeps agreement cost constant\nwhatever the payload size."
    assert q.extra == ()


def test_resolved_question_prose_answer_is_verbatim():
    q = only(
        parse_ok(
            """
            resolved question "Who owns refunds?" {
                answer:
                    -- Finance owns refunds   (two spaces kept) ; `code` & "quotes"
                    --   - indented bullet stays indented
                rationale: "Support cannot move money."
                decided_by: "Board, 2026-03"
            }
            """
        ),
        ast.ResolvedQuestion,
    )
    assert q.answer == 'Finance owns refunds   (two spaces kept) ; `code` & "quotes"\n  - indented bullet stays indented'
    assert q.rationale == "Support cannot move money."
    assert q.extra == (("decided_by", "Board, 2026-03"),)


def test_resolved_question_span_covers_block():
    q = only(parse_ok(RESOLVED), ast.ResolvedQuestion)
    assert (q.span.start.line, q.span.end.line) == (2, 7)


def test_v1_guidance_blocks():
    module = parse_ok(
        """
        rule Remind {
            when: invite: Invitation.expires_at - 1.day <= now
            ensures: ReminderSent(invite)
            guidance: -- Send at most one reminder.
        }

        entity Invitation {
            expires_at: Timestamp
            guidance:
                -- Invitations are immutable once sent;
                -- re-invite instead of editing.
        }
        """,
        version=1,
    )
    rule, entity = module.decls
    assert [(a.kind, a.prose) for a in rule.annotations] == [("guidance", "Send at most one reminder.")]
    assert [(a.kind, a.prose) for a in entity.annotations] == [
        ("guidance", "Invitations are immutable once sent;\nre-invite instead of editing.")
    ]


def test_guidance_annotation_in_rule():
    rule = only(
        parse_ok(
            """
            rule R {
                when: X()
                ensures: Y()
                @guidance
                    -- Prefer the cheapest carrier.
                    --     Indentation inside prose is kept.
            }
            """
        ),
        ast.RuleDecl,
    )
    assert [(a.kind, a.prose) for a in rule.annotations] == [
        ("guidance", "Prefer the cheapest carrier.\n    Indentation inside prose is kept.")
    ]


# ---------------------------------------------------------------- comments: suppressions, doc comments


def test_allium_ignore_suppressions():
    module = parse_ok(
        """
        -- allium-ignore unused.entity, rule.unreachable
        entity Orphan {
            x: String
        }
        -- allium-ignore naming.case
        """
    )
    assert module.suppressions == ((2, ("unused.entity", "rule.unreachable")), (6, ("naming.case",)))


def test_doc_comments_attach_to_declarations():
    module = parse_ok(
        """
        -- ------------------------------------------------------------------
        -- An order placed by a customer.
        -- Orders are never deleted.
        entity Order {
            -- not a doc comment: inside the body
            total: Decimal
        }

        entity Undocumented {
            x: String
        }

        -- Checks out the basket.
        rule Checkout {
            when: CheckoutRequested(basket)
            ensures: Order.created(total: basket.total)
        }
        """
    )
    order, bare = module.entities
    assert order.doc_comment == "An order placed by a customer.\nOrders are never deleted."
    assert order.doc == order.doc_comment
    assert bare.doc_comment is None
    assert module.rules[0].doc_comment == "Checks out the basket."


# ---------------------------------------------------------------- expressions


EXPRESSION_CASES = [
    ("or_and", "a or b and c", "(or a (and b c))"),
    ("and_or_parens", "(a or b) and c", "(and (or a b) c)"),
    ("implies_or", "a implies b or c", "(implies a (or b c))"),
    ("implies_right_assoc", "a implies b implies c", "(implies a (implies b c))"),
    ("not_binds_tighter", "not a and b", "(and (not a) b)"),
    ("eq_union", "x = a | b", "(= x (| a b))"),
    ("in_set", "status in {pending, active}", "(in status {pending, active})"),
    ("not_in", "status not in {closed}", "(not in status {closed})"),
    ("arith", "a + b * c - d / e", "(- (+ a (* b c)) (/ d e))"),
    ("arith_parens", "(a + b) * c", "(* (+ a b) c)"),
    ("negation", "-a + 1", "(+ (- a) 1)"),
    ("modulo", "n % 2 = 0", "(= (% n 2) 0)"),
    ("coalesce", "a ?? b + 1", "(?? a (+ b 1))"),
    ("coalesce_compare", "a ?? b = c", "(= (?? a b) c)"),
    ("optional_chain", "user?.profile?.name", "user?.profile?.name"),
    ("duration", "now + 24.hours", "(+ now 24.hours)"),
    ("lambda", "items.any(i => i.price > 10)", "items.any((i => (> i.price 10)))"),
    ("lambda_in_count", "items.count(i => i.ok) >= 2", "(>= items.count((i => i.ok)) 2)"),
    ("set_literal", "{a, b, c}", "{a, b, c}"),
    ("empty_set", "{}", "{}"),
    ("object_literal", '{ name: "x", size: 3 }', '{name: "x", size: 3}'),
    ("list_literal", "[1, 2, 3]", "[1, 2, 3]"),
    ("join_lookup", "Membership{user: u, team: t}.role", "Membership{user: u, team: t}.role"),
    ("join_lookup_shorthand", "Membership{user, team}", "Membership{user, team}"),
    ("exists_lookup", "exists Membership{user: u}", "(exists Membership{user: u})"),
    ("inline_if", 'if a: "x" else: "y"', '(if [a "x"] else "y")'),
    (
        "inline_if_elif",
        "if a > 1: big else if a = 1: one else: small",
        "(if [(> a 1) big] [(= a 1) one] else small)",
    ),
    ("qualified_name", "core/Session.active", "core/Session.active"),
    ("comparison_ops", "a <= b and c != d", "(and (<= a b) (!= c d))"),
    ("double_equals", "a == b", "(= a b)"),
    ("where_then_project", "xs where ok -> name", "(-> (where xs ok) name)"),
    ("includes", "members includes user", "(includes members user)"),
    ("string_escape", '"say \\"hi\\""', '"say "hi""'),
    ("number_underscores", "100_000_000", "100000000"),
    ("decimal", "0.75 * total", "(* 0.75 total)"),
]


@pytest.mark.parametrize("expr,expected", [c[1:] for c in EXPRESSION_CASES], ids=[c[0] for c in EXPRESSION_CASES])
def test_expression_precedence(expr, expected):
    entity = only(parse_ok(f"entity E {{\n    v: {expr}\n}}"), ast.EntityDecl)
    assert show(entity.fields[0].value) == expected


def test_multiline_expression_continuations():
    entity = only(
        parse_ok(
            """
            entity E {
                v: a
                    and b
                    or c
                w: total +
                    tax
            }
            """
        ),
        ast.EntityDecl,
    )
    assert fields(entity) == {"v": ("derived", "(or (and a b) c)"), "w": ("derived", "(+ total tax)")}


# ---------------------------------------------------------------- spans


def test_spans_lines_columns_offsets():
    text = "-- allium: 3\n\nentity Order {\n    total: Decimal\n}\n"
    module = parse_text(text, "o.allium").module
    entity = module.entities[0]
    assert entity.span.file == "o.allium"
    assert (entity.span.start.line, entity.span.start.column) == (3, 1)
    assert (entity.span.end.line, entity.span.end.column) == (5, 2)
    assert entity.span.start.offset == text.index("entity")
    assert entity.span.end.offset == text.index("}") + 1
    field = entity.fields[0]
    assert (field.span.start.line, field.span.start.column) == (4, 5)
    assert text[field.span.start.offset : field.span.end.offset] == "total: Decimal"
    assert text[field.value.span.start.offset : field.value.span.end.offset] == "Decimal"
    assert module.span.start.offset == 0 and module.span.end.offset == len(text)


def test_byte_offsets_after_non_ascii():
    text = '-- allium: 3\n-- Café – naïve\nentity Prix {\n    label: "déjà vu" | other\n    montant: Decimal\n}\n'
    module = parse_text(text, "u.allium").module
    entity = module.entities[0]
    char_offset = text.index("entity")
    assert entity.span.start.offset == char_offset
    assert entity.span.start.byte_offset == len(text[:char_offset].encode("utf-8"))
    assert entity.span.start.byte_offset == char_offset + 4  # é, –(3 bytes), ï: four extra bytes
    label, amount = entity.fields
    assert amount.span.start.byte_offset == len(text[: amount.span.start.offset].encode("utf-8"))
    assert amount.span.start.byte_offset - amount.span.start.offset == 6  # plus é and à in "déjà"
    assert (amount.span.start.line, amount.span.start.column) == (5, 5)
    raw = text.encode("utf-8")
    value = amount.value
    assert raw[value.span.start.byte_offset : value.span.end.byte_offset].decode() == "Decimal"
    string = label.value.left
    assert raw[string.span.start.byte_offset : string.span.end.byte_offset].decode() == '"déjà vu"'
    assert string.value == "déjà vu"


def test_every_node_has_a_span_inside_the_file():
    text = src(RESOLVED + "\nrule R {\n    when: X(a)\n    ensures: a.b = {1, 2} ?? c\n}\n")
    module = parse_text(text).module
    for node in module.walk():
        assert node.span is not None, node
        assert 0 <= node.span.start.offset <= node.span.end.offset <= len(text), node


def test_json_form_is_plain_data():
    import json

    module = parse_ok(RESOLVED)
    data = json.loads(json.dumps(ast.to_json(module)))
    assert data["node"] == "Module" and data["version"] == 3
    q = data["decls"][0]
    assert q["node"] == "ResolvedQuestion" and q["span"]["line"] == 2
    assert set(q["span"]) >= {"file", "line", "col", "offset", "byte_offset"}


def test_parse_never_leaks_lark_types():
    module = parse_ok(RESOLVED + "\nentity E {\n    s: a | b\n}\n")
    for node in module.walk():
        for value in vars_of(node):
            assert type(value).__module__.split(".")[0] != "lark", (node, value)


def vars_of(node):
    from dataclasses import fields as dc_fields

    for f in dc_fields(node):
        value = getattr(node, f.name)
        yield value
        if isinstance(value, tuple):
            yield from value


def test_errors_helper_sanity():
    assert errors(parse_text(src("entity {"))) != []


def test_annotation_and_declaration_spans_end_where_their_text_ends():
    text = src(
        """
        rule R {
            when: X()
            ensures: Y()
            @guidance
                -- Prefer the cheapest carrier.
        }

        entity E {
            x: String
        }
        """
    )
    module = parse_text(text).module
    rule, entity = module.decls
    [annotation] = rule.annotations
    assert text[annotation.span.start.offset : annotation.span.end.offset] == (
        "@guidance\n        -- Prefer the cheapest carrier."
    )
    # A declaration ends at its `}`, not at the start of the next line.
    assert text[rule.span.end.offset - 1] == "}" and (rule.span.end.line, rule.span.end.column) == (7, 2)
    assert text[entity.span.end.offset - 1] == "}" and entity.span.end.line == 11
