// Time and id filters on the trail's views reach the groups.
//
// pii_audit.events unpacks each group of trail_groups into its events with _group_events, so a
// filter on the view's event_time or event_id is a filter on the function's output: PostgreSQL
// cannot use it to skip groups, and a query for five minutes of events unpacks the whole trail.
// Before planning, this adds the filters they imply on the group's own columns (a group's events
// lie between min_time and max_time, at most an hour apart, and its ids are first_event_id ..
// first_event_id + 4095), which use the indexes and prune partitions:
//   event_time >= x  ->  max_time >= x AND min_time >= x - 1 hour
//                        AND (min_time >= x - 10 s OR max_time - min_time > 10 s)
//   event_time <= x  ->  min_time <= x                (and the strict forms alike)
//   event_id   >= x  ->  first_event_id >= x - 4095
//   event_id   <= x  ->  first_event_id <= x
// Only filters of the form `column op expression` in the top-level AND of a WHERE clause, where
// the expression has no columns, no volatile functions and no subqueries; the filters
// themselves stay, so the result is the same whether an implied filter was added or not. When x
// is a constant time (or one plus or minus hours, minutes and seconds), the implied bounds are
// worked out here as constants, so that months outside them are not even planned; a lower bound
// from the clock (now() - 5 minutes) also gets a constant no later than it, for the months. The
// OR is what keeps a short window on a busy trail short: nearly every group spans a fraction of
// a second (one batch's events of one statement), so they are found by going back 10 s through
// the min_time index, and the few longer ones (a backlog stored late, a long flush_interval)
// through trail_groups_long_span, a partial index holding only them; with the hour alone, five
// minutes of a trail written at 50,000 events/s would filter an hour of groups. A
// filter on a view over pii_audit.events (access_log, login_log, label_changes) is first copied
// into that view's query when the column is a plain column of pii_audit.events.
#include "pii_audit/trail_group.h"
#include "pii_audit_internal.h"

extern "C" {
#include "access/stratnum.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_namespace_d.h"
#include "catalog/pg_opfamily_d.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "common/int.h"
#include "datatype/timestamp.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/optimizer.h"
#include "parser/parse_coerce.h"
#include "parser/parse_oper.h"
#include "parser/parsetree.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"
}

namespace {

constexpr int kMaxDepth = 8;
// Built-in catalog objects (pg_opfamily.dat, pg_operator.dat), fixed across versions.
constexpr Oid kDatetimeBtreeFamily = 434;     // btree datetime_ops
constexpr Oid kTimestamptzPlusInterval = 1327;   // timestamptz + interval
constexpr Oid kTimestamptzMinusInterval = 1329;  // timestamptz - interval
constexpr Oid kInt8Minus = 685;               // int8 - int8
constexpr Oid kTimestamptzMinus = 1328;       // timestamptz - timestamptz
constexpr Oid kIntervalGreater = 1334;        // interval > interval
// The predicate of the partial index trail_groups_long_span (pii_audit--0.2.0--0.3.0.sql),
// max_time - min_time > interval '10 seconds': the planner uses the index only for this very
// expression, so the two must stay equal.
constexpr int64 kShortSpanMicros = 10LL * 1000 * 1000;

struct TrailOids {
    Oid group_events;  // pii_audit._group_events
    Oid groups;        // pii_audit.trail_groups
};

bool find_trail(TrailOids* oids) {
    Oid nsp = get_namespace_oid("pii_audit", true);
    if (!OidIsValid(nsp)) return false;
    oids->groups = get_relname_relid("trail_groups", nsp);
    if (!OidIsValid(oids->groups)) return false;
    // Straight from the catalog cache: a name lookup would check the user's USAGE on the schema
    // and fail the statement of anyone who has none (most users), which must never happen here.
    Oid args[3] = {INT8OID, TIMESTAMPTZOID, BYTEAOID};
    oidvector* types = buildoidvector(args, 3);
    oids->group_events =
        GetSysCacheOid3(PROCNAMEARGSNSP, Anum_pg_proc_oid, CStringGetDatum("_group_events"),
                        PointerGetDatum(types), ObjectIdGetDatum(nsp));
    pfree(types);
    return OidIsValid(oids->group_events);
}

bool has_column_walker(Node* node, void* context) {
    if (node == nullptr) return false;
    if (IsA(node, Var) || IsA(node, PlaceHolderVar) || IsA(node, SubLink) || IsA(node, Aggref) ||
        IsA(node, WindowFunc) || IsA(node, GroupingFunc) ||
        (IsA(node, Param) && castNode(Param, node)->paramkind != PARAM_EXTERN))
        return true;
    return expression_tree_walker(node, pii_audit_as_walker(has_column_walker), context);
}

// The filter's other side may be copied anywhere: no column of any query level, no subquery, no
// aggregate, nothing volatile; parameters of the statement are fine.
bool pseudo_constant(Node* expr) {
    return expr != nullptr && !has_column_walker(expr, nullptr) && !contain_volatile_functions(expr);
}

// A btree comparison `Var op expr` (or `expr op Var`, commuted) on the range table entry rti.
// Returns the strategy (BTLessStrategyNumber ..), the column and the expression.
int comparison(Node* qual, Index rti, AttrNumber* attno, Node** other) {
    if (!IsA(qual, OpExpr)) return 0;
    auto* op = castNode(OpExpr, qual);
    if (list_length(op->args) != 2) return 0;
    Node* left = static_cast<Node*>(linitial(op->args));
    Node* right = static_cast<Node*>(lsecond(op->args));
    Oid opno = op->opno;
    if (IsA(right, Var) && !IsA(left, Var)) {
        std::swap(left, right);
        opno = get_commutator(opno);
        if (!OidIsValid(opno)) return 0;
    }
    if (!IsA(left, Var)) return 0;
    auto* var = castNode(Var, left);
    if (var->varno != static_cast<int>(rti) || var->varlevelsup != 0) return 0;
    if (!pseudo_constant(right)) return 0;
    List* interpretations = get_op_btree_interpretation(opno);
    int strategy = 0;
    ListCell* cell;
    foreach (cell, interpretations) {
        auto* it = static_cast<OpBtreeInterpretation*>(lfirst(cell));
        if (it->strategy >= BTLessStrategyNumber && it->strategy <= BTGreaterStrategyNumber &&
            it->strategy != 0) {
            strategy = it->strategy;
            break;
        }
    }
    *attno = var->varattno;
    *other = right;
    return strategy;
}

List* and_list(Node* quals) {
    if (quals == nullptr) return NIL;
    if (is_andclause(quals)) return castNode(BoolExpr, quals)->args;
    return list_make1(quals);
}

// Appends to the top-level AND of q's WHERE, so that and_list sees every filter added.
void add_qual(Query* q, Node* qual) {
    Node* quals = q->jointree->quals;
    if (quals == nullptr)
        q->jointree->quals = qual;
    else if (is_andclause(quals))
        castNode(BoolExpr, quals)->args = lappend(castNode(BoolExpr, quals)->args, qual);
    else
        q->jointree->quals = reinterpret_cast<Node*>(make_andclause(list_make2(quals, qual)));
}

// `column op expr` with a btree operator of the column's type and the expression's (made the
// column's type when it is not), or nullptr.
Node* compare(Var* column, int strategy, Node* expr) {
    Oid type = column->vartype;
    Node* arg = expr;
    if (exprType(arg) != type) {
        arg = coerce_to_target_type(nullptr, arg, exprType(arg), type, -1, COERCION_IMPLICIT,
                                    COERCE_IMPLICIT_CAST, -1);
        if (arg == nullptr) return nullptr;
    }
    // Operators by their btree family, never by name: a name would be looked up in the user's
    // search_path.
    const Oid family = type == TIMESTAMPTZOID ? kDatetimeBtreeFamily : INTEGER_BTREE_FAM_OID;
    Oid opno = get_opfamily_member(family, type, type, static_cast<int16>(strategy));
    if (!OidIsValid(opno)) return nullptr;
    return reinterpret_cast<Node*>(make_opclause(opno, BOOLOID, false,
                                                 static_cast<Expr*>(copyObjectImpl(column)),
                                                 static_cast<Expr*>(copyObjectImpl(arg)),
                                                 InvalidOid, InvalidOid));
}

// expr - offset (an interval for times, a bigint for ids), or nullptr.
Node* minus(Node* expr, Oid type, Node* offset) {
    if (exprType(expr) != type) {
        expr = coerce_to_target_type(nullptr, expr, exprType(expr), type, -1, COERCION_IMPLICIT,
                                     COERCE_IMPLICIT_CAST, -1);
        if (expr == nullptr) return nullptr;
    }
    Oid opno = type == TIMESTAMPTZOID ? kTimestamptzMinusInterval : kInt8Minus;
    return reinterpret_cast<Node*>(make_opclause(opno, type, false, reinterpret_cast<Expr*>(expr),
                                                 reinterpret_cast<Expr*>(offset), InvalidOid,
                                                 InvalidOid));
}

Node* interval_const(int64 micros) {
    auto* value = static_cast<Interval*>(palloc0(sizeof(Interval)));
    value->time = micros;
    return reinterpret_cast<Node*>(makeConst(INTERVALOID, -1, InvalidOid, sizeof(Interval),
                                             PointerGetDatum(value), false, false));
}

// t moved by micros (back: earlier), as timestamptz +/- an interval of time alone computes it
// (infinity stays); false when the result is out of range.
bool shift_time(TimestampTz t, int64 micros, bool back, TimestampTz* out) {
    if (TIMESTAMP_NOT_FINITE(t)) {
        *out = t;
        return true;
    }
    return !(back ? pg_sub_s64_overflow(t, micros, out) : pg_add_s64_overflow(t, micros, out)) &&
           IS_VALID_TIMESTAMP(*out);
}

Node* timestamptz_const(TimestampTz t) {
    return reinterpret_cast<Node*>(makeConst(TIMESTAMPTZOID, -1, InvalidOid, sizeof(TimestampTz),
                                             TimestampTzGetDatum(t), false, FLOAT8PASSBYVAL));
}

// The time a filter's expression stands for, if it is the same in every time zone and whenever
// the plan runs: a timestamptz constant, plus or minus constant intervals of hours, minutes and
// seconds (days and months depend on the time zone, so those are not worked out here). Then
// the implied filters are constants too and partitions outside the range are left out of the
// plan itself: with PostgreSQL's operators, which are only stable, every month was planned and
// left out only when the plan started, and planning opened every month's table and indexes (most
// of a new session's first query over the trail). False for anything else.
//
// With clock, the current time's functions count too (now() and CURRENT_TIMESTAMP,
// transaction_timestamp(), statement_timestamp()), at their value now: the result is then the
// earliest the expression can be when the plan runs, now or later (a cached plan runs later,
// and the clock only moves forward, apart from the margin below).
bool time_value(Node* expr, bool clock, TimestampTz* out) {
    if (clock && IsA(expr, FuncExpr) && list_length(castNode(FuncExpr, expr)->args) == 0) {
        const Oid fn = castNode(FuncExpr, expr)->funcid;
        if (fn == F_NOW || fn == F_TRANSACTION_TIMESTAMP || fn == F_STATEMENT_TIMESTAMP) {
            *out = fn == F_STATEMENT_TIMESTAMP ? GetCurrentStatementStartTimestamp()
                                               : GetCurrentTransactionStartTimestamp();
            return true;
        }
    }
    if (clock && IsA(expr, SQLValueFunction) &&
        (castNode(SQLValueFunction, expr)->op == SVFOP_CURRENT_TIMESTAMP ||
         castNode(SQLValueFunction, expr)->op == SVFOP_CURRENT_TIMESTAMP_N)) {
        // CURRENT_TIMESTAMP(n) rounds to n digits: at most half a second earlier.
        *out = GetCurrentTransactionStartTimestamp() - USECS_PER_SEC;
        return true;
    }
    if (IsA(expr, Const)) {
        auto* c = castNode(Const, expr);
        if (c->consttype != TIMESTAMPTZOID || c->constisnull) return false;
        *out = DatumGetTimestampTz(c->constvalue);
        return true;
    }
    if (!IsA(expr, OpExpr)) return false;
    auto* op = castNode(OpExpr, expr);
    if ((op->opno != kTimestamptzPlusInterval && op->opno != kTimestamptzMinusInterval) ||
        list_length(op->args) != 2)
        return false;
    TimestampTz base;
    auto* span = static_cast<Node*>(lsecond(op->args));
    if (!time_value(static_cast<Node*>(linitial(op->args)), clock, &base) || !IsA(span, Const) ||
        castNode(Const, span)->constisnull || castNode(Const, span)->consttype != INTERVALOID)
        return false;
    const Interval* by = DatumGetIntervalP(castNode(Const, span)->constvalue);
    if (by->month != 0 || by->day != 0) return false;
    // Out of range: left to the operator, which reports it when the query runs.
    return shift_time(base, by->time, op->opno == kTimestamptzMinusInterval, out);
}

bool fixed_time(Node* expr, TimestampTz* out) { return time_value(expr, false, out); }

// The server's clock may be stepped back (NTP, a VM restored): a plan made now and run after a
// step back of less than this still plans every month it must read.
constexpr int64 kClockStepMargin = USECS_PER_DAY;

Var* group_column(Index rti, const char* name, Oid relid) {
    AttrNumber attno = get_attnum(relid, name);
    if (attno == InvalidAttrNumber) return nullptr;
    return makeVar(rti, attno, get_atttype(relid, attno), -1, InvalidOid, 0);
}

// The range table entries of trail_groups (*g) and of _group_events (*e) in q itself, 0 when
// absent: the shape of pii_audit.events' query.
void find_group_entries(Query* q, const TrailOids& oids, Index* g, Index* e) {
    *g = *e = 0;
    ListCell* cell;
    Index rti = 0;
    foreach (cell, q->rtable) {
        ++rti;
        auto* rte = static_cast<RangeTblEntry*>(lfirst(cell));
        if (rte->rtekind == RTE_RELATION && rte->relid == oids.groups) *g = rti;
        if (rte->rtekind == RTE_FUNCTION && list_length(rte->functions) == 1) {
            auto* fn = static_cast<RangeTblFunction*>(linitial(rte->functions));
            if (IsA(fn->funcexpr, FuncExpr) &&
                castNode(FuncExpr, fn->funcexpr)->funcid == oids.group_events)
                *e = rti;
        }
    }
}

// In the query of pii_audit.events (trail_groups g, _group_events(...) e): filters on e's
// event_time (2nd column) and event_id (1st) imply filters on g.
void add_group_quals(Query* q, const TrailOids& oids) {
    Index g, e;
    find_group_entries(q, oids, &g, &e);
    ListCell* cell;
    if (g == 0 || e == 0) return;
    List* added = NIL;
    foreach (cell, and_list(q->jointree->quals)) {
        AttrNumber attno;
        Node* other;
        int strategy = comparison(static_cast<Node*>(lfirst(cell)), e, &attno, &other);
        if (strategy == 0 || (attno != 1 && attno != 2)) continue;
        const bool lower = strategy == BTGreaterStrategyNumber ||
                           strategy == BTGreaterEqualStrategyNumber ||
                           strategy == BTEqualStrategyNumber;
        const bool upper = strategy == BTLessStrategyNumber || strategy == BTLessEqualStrategyNumber ||
                           strategy == BTEqualStrategyNumber;
        if (attno == 2) {  // event_time
            Var* min_time = group_column(g, "min_time", oids.groups);
            Var* max_time = group_column(g, "max_time", oids.groups);
            if (min_time == nullptr || max_time == nullptr) continue;
            TimestampTz fixed;
            const bool is_fixed = fixed_time(other, &fixed);
            if (is_fixed) other = timestamptz_const(fixed);
            if (lower) {
                int s = strategy == BTEqualStrategyNumber ? BTGreaterEqualStrategyNumber : strategy;
                if (Node* n = compare(max_time, s, other)) added = lappend(added, n);
                // min_time >= other - span, or nullptr
                auto starts_within = [&](int64 span) -> Node* {
                    TimestampTz earlier;
                    Node* bound = is_fixed && shift_time(fixed, span, true, &earlier)
                                      ? timestamptz_const(earlier)
                                      : minus(static_cast<Node*>(copyObjectImpl(other)),
                                              TIMESTAMPTZOID, interval_const(span));
                    return bound ? compare(min_time, BTGreaterEqualStrategyNumber, bound) : nullptr;
                };
                if (Node* n = starts_within(pii_audit::kMaxGroupSpanMicros)) added = lappend(added, n);
                // A bound from the clock (`now() - interval '5 minutes'`) stays as it is, worked
                // out when the plan runs; a constant no later than it is added for the months
                // alone, so that the months before are not planned either.
                TimestampTz earliest;
                if (!is_fixed && time_value(other, true, &earliest) &&
                    !TIMESTAMP_NOT_FINITE(earliest) &&
                    shift_time(earliest, pii_audit::kMaxGroupSpanMicros + kClockStepMargin, true,
                               &earliest))
                    if (Node* n = compare(min_time, BTGreaterEqualStrategyNumber,
                                          timestamptz_const(earliest)))
                        added = lappend(added, n);
                if (Node* late = starts_within(kShortSpanMicros)) {
                    auto* span = make_opclause(kTimestamptzMinus, INTERVALOID, false,
                                               static_cast<Expr*>(copyObjectImpl(max_time)),
                                               static_cast<Expr*>(copyObjectImpl(min_time)),
                                               InvalidOid, InvalidOid);
                    auto* long_span = make_opclause(
                        kIntervalGreater, BOOLOID, false, span,
                        reinterpret_cast<Expr*>(interval_const(kShortSpanMicros)), InvalidOid,
                        InvalidOid);
                    added = lappend(added, make_orclause(list_make2(late, long_span)));
                }
            }
            if (upper) {
                int s = strategy == BTEqualStrategyNumber ? BTLessEqualStrategyNumber : strategy;
                if (Node* n = compare(min_time, s, other)) added = lappend(added, n);
            }
        } else {  // event_id
            Var* first = group_column(g, "first_event_id", oids.groups);
            if (first == nullptr) continue;
            if (lower) {
                Node* offset = reinterpret_cast<Node*>(
                    makeConst(INT8OID, -1, InvalidOid, sizeof(int64), Int64GetDatum(4095), false,
                              FLOAT8PASSBYVAL));
                if (Node* bound = minus(static_cast<Node*>(copyObjectImpl(other)), INT8OID, offset))
                    if (Node* n = compare(first, BTGreaterEqualStrategyNumber, bound))
                        added = lappend(added, n);
            }
            if (upper) {
                int s = strategy == BTEqualStrategyNumber ? BTLessEqualStrategyNumber : strategy;
                if (Node* n = compare(first, s, other)) added = lappend(added, n);
            }
        }
    }
    foreach (cell, added) add_qual(q, static_cast<Node*>(lfirst(cell)));
}

// A subquery a filter may be copied into: it returns its rows as they are.
bool plain_subquery(Query* sub) {
    return sub->commandType == CMD_SELECT && sub->setOperations == nullptr && !sub->hasAggs &&
           !sub->hasWindowFuncs && !sub->hasTargetSRFs && sub->groupClause == NIL &&
           sub->groupingSets == NIL && sub->havingQual == nullptr && sub->distinctClause == NIL &&
           sub->limitCount == nullptr && sub->limitOffset == nullptr && sub->rowMarks == NIL &&
           sub->cteList == NIL && sub->jointree != nullptr;
}

void walk(Query* q, const TrailOids& oids, int depth);

// Whether q reads trail_groups through _group_events, here or in a subquery of its FROM list:
// only such subqueries get filters copied into them (any other query keeps its plan).
bool reads_groups(Query* q, const TrailOids& oids, int depth) {
    if (q == nullptr || depth > kMaxDepth) return false;
    Index g, e;
    find_group_entries(q, oids, &g, &e);
    if (g != 0 && e != 0) return true;
    ListCell* cell;
    foreach (cell, q->rtable) {
        auto* rte = static_cast<RangeTblEntry*>(lfirst(cell));
        if (rte->rtekind == RTE_SUBQUERY && reads_groups(rte->subquery, oids, depth + 1))
            return true;
    }
    return false;
}

// Filters on a view's column that is a plain column of a subquery in it go down a level.
void copy_quals_down(Query* q, const TrailOids& oids, int depth) {
    ListCell* cell;
    Index rti = 0;
    foreach (cell, q->rtable) {
        ++rti;
        auto* rte = static_cast<RangeTblEntry*>(lfirst(cell));
        if (rte->rtekind != RTE_SUBQUERY || rte->subquery == nullptr || rte->security_barrier)
            continue;
        Query* sub = rte->subquery;
        if (!reads_groups(sub, oids, depth + 1)) continue;
        if (q->jointree != nullptr && plain_subquery(sub)) {
            ListCell* qc;
            foreach (qc, and_list(q->jointree->quals)) {
                AttrNumber attno;
                Node* other;
                Node* qual = static_cast<Node*>(lfirst(qc));
                if (comparison(qual, rti, &attno, &other) == 0) continue;
                TargetEntry* te = get_tle_by_resno(sub->targetList, attno);
                if (te == nullptr || te->resjunk || !IsA(te->expr, Var) ||
                    castNode(Var, te->expr)->varlevelsup != 0)
                    continue;
                // The same filter, on the subquery's own column.
                Node* copy = static_cast<Node*>(copyObjectImpl(qual));
                auto* op = castNode(OpExpr, copy);
                ListCell* arg;
                foreach (arg, op->args) {
                    if (IsA(lfirst(arg), Var) && castNode(Var, lfirst(arg))->varno == static_cast<int>(rti))
                        lfirst(arg) = copyObjectImpl(te->expr);
                }
                add_qual(sub, copy);
            }
        }
        walk(sub, oids, depth + 1);
    }
}

void walk(Query* q, const TrailOids& oids, int depth) {
    if (q == nullptr || depth > kMaxDepth || q->jointree == nullptr) return;
    copy_quals_down(q, oids, depth);
    add_group_quals(q, oids);
}

// Whether trail_groups is in the range table of the query or of any query in it (subqueries,
// CTEs, sublinks).
bool mentions_groups(Node* node, const TrailOids* oids) {
    if (node == nullptr) return false;
    if (IsA(node, RangeTblEntry)) {
        auto* rte = castNode(RangeTblEntry, node);
        return rte->rtekind == RTE_RELATION && rte->relid == oids->groups;
    }
    if (IsA(node, Query))
        return query_tree_walker(castNode(Query, node), pii_audit_as_walker(mentions_groups),
                                 const_cast<TrailOids*>(oids), QTW_EXAMINE_RTES_BEFORE);
    return expression_tree_walker(node, pii_audit_as_walker(mentions_groups),
                                  const_cast<TrailOids*>(oids));
}

bool has_subquery(Query* q) {
    ListCell* cell;
    foreach (cell, q->rtable)
        if (static_cast<RangeTblEntry*>(lfirst(cell))->rtekind == RTE_SUBQUERY) return true;
    return false;
}

}  // namespace

// Called by the planner hook before planning a query (see capture).
bool pii_audit_trail_quals(Query* parse) {
    if (parse == nullptr || parse->commandType != CMD_SELECT) return false;
    // Cheap first: most statements read no subquery, and none outside the audit database reads
    // pii_audit.events.
    TrailOids oids;
    bool direct = false;
    ListCell* cell;
    foreach (cell, parse->rtable) {
        auto* rte = static_cast<RangeTblEntry*>(lfirst(cell));
        if (rte->rtekind == RTE_FUNCTION) direct = true;
    }
    if (!has_subquery(parse) && !direct && parse->cteList == NIL && !parse->hasSubLinks)
        return false;
    if (!find_trail(&oids)) return false;
    walk(parse, oids, 0);
    return mentions_groups(reinterpret_cast<Node*>(parse), &oids);
}
