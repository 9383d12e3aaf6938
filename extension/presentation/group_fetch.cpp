// _trail_group(first_event_id bigint, not_before timestamptz, not_after timestamptz)
//   RETURNS SETOF pii_audit.trail_groups
// The group whose first id is first_event_id, looked for only in the month partitions whose
// range meets [not_before, not_after] (the bounds of its min_time a subject index slice gives),
// through each partition's index on first_event_id, with the caller's snapshot.
//
// subject_access used to join the groups the index named with trail_groups itself: the planner
// then looked at every month (relation, indexes, statistics) before it ran anything, about
// 80-130 ms in a new session over 14 months (bench/RESULTS.md, part 12), growing with every
// month retention keeps. This opens only the months a person's groups lie in.
//
// Internal: EXECUTE is revoked from PUBLIC; officers reach it through subject_access.
#include "pii_audit/trail_group.h"

#include "pii_audit_internal.h"

extern "C" {
#include "access/genam.h"
#include "access/relscan.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/tupconvert.h"
#include "catalog/namespace.h"
#include "catalog/pg_inherits.h"
#include "catalog/pg_am_d.h"
#include "catalog/pg_index.h"
#include "catalog/pg_type.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "funcapi.h"
#include "partitioning/partbounds.h"
#include "partitioning/partdesc.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/array.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

PGDLLEXPORT Datum pii_audit_trail_group(PG_FUNCTION_ARGS);
PG_FUNCTION_INFO_V1(pii_audit_trail_group);
}

namespace {

// The partition's btree index whose only key is first_event_id, or InvalidOid.
Oid event_id_index(Relation part) {
    const AttrNumber attnum = get_attnum(RelationGetRelid(part), "first_event_id");
    if (attnum == InvalidAttrNumber) return InvalidOid;
    List* indexes = RelationGetIndexList(part);
    Oid found = InvalidOid;
    ListCell* cell;
    foreach (cell, indexes) {
        Relation index = index_open(lfirst_oid(cell), AccessShareLock);
        const bool match = index->rd_rel->relam == BTREE_AM_OID &&
                           index->rd_index->indnkeyatts == 1 &&
                           index->rd_index->indkey.values[0] == attnum &&
                           heap_attisnull(index->rd_indextuple, Anum_pg_index_indpred, nullptr) &&
                           heap_attisnull(index->rd_indextuple, Anum_pg_index_indexprs, nullptr);
        index_close(index, AccessShareLock);
        if (match) {
            found = lfirst_oid(cell);
            break;
        }
    }
    list_free(indexes);
    return found;
}

Oid trail_groups_oid() {
    Oid nsp = get_namespace_oid("pii_audit", false);
    Oid parent = get_relname_relid("trail_groups", nsp);
    if (!OidIsValid(parent))
        ereport(ERROR, (errcode(ERRCODE_UNDEFINED_TABLE),
                        errmsg("pii_audit: table pii_audit.trail_groups does not exist")));
    return parent;
}

// Every table holding groups: the leaf partitions (or trail_groups itself, not partitioned).
List* group_tables(Oid parent) {
    List* all = find_all_inheritors(parent, AccessShareLock, nullptr);
    List* leaves = NIL;
    ListCell* cell;
    foreach (cell, all) {
        Oid relid = lfirst_oid(cell);
        if (get_rel_relkind(relid) == RELKIND_RELATION) leaves = lappend_oid(leaves, relid);
    }
    list_free(all);
    return leaves;
}

// Scans a table's first_event_id index forward from first_event_id > lo (and <= hi, unless
// hi_open); visit(slot) returns false to stop.
template <class Visit>
void scan_ids(Relation part, int64 lo, int64 hi, bool hi_open, Visit&& visit) {
    Oid index_oid = event_id_index(part);
    if (!OidIsValid(index_oid))
        ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                        errmsg("pii_audit: partition %s has no index on first_event_id",
                               RelationGetRelationName(part)),
                        errhint("ALTER EXTENSION pii_audit UPDATE, or recreate the index.")));
    Relation index = index_open(index_oid, AccessShareLock);
    ScanKeyData keys[2];
    ScanKeyInit(&keys[0], 1, BTGreaterStrategyNumber, F_INT8GT, Int64GetDatum(lo));
    ScanKeyInit(&keys[1], 1, BTLessEqualStrategyNumber, F_INT8LE, Int64GetDatum(hi));
    const int nkeys = hi_open ? 1 : 2;
    IndexScanDesc scan = index_beginscan(part, index, GetActiveSnapshot(), nkeys, 0);
    index_rescan(scan, keys, nkeys, nullptr, 0);
    TupleTableSlot* slot = table_slot_create(part, nullptr);
    while (index_getnext_slot(scan, ForwardScanDirection, slot))
        if (!visit(slot)) break;
    ExecDropSingleTupleTableSlot(slot);
    index_endscan(scan);
    index_close(index, AccessShareLock);
}


// Adds the partition's group with that first id, if any, to the result.
void fetch_from(Oid partition, int64 first_event_id, TupleDesc result_desc,
                Tuplestorestate* result) {
    Relation part = table_open(partition, AccessShareLock);
    // The partition's columns in the parent's order (a partition may order them otherwise).
    TupleConversionMap* map = convert_tuples_by_name(RelationGetDescr(part), result_desc);
    TupleTableSlot* out = MakeSingleTupleTableSlot(result_desc, &TTSOpsVirtual);
    if (first_event_id > PG_INT64_MIN)
        scan_ids(part, first_event_id - 1, first_event_id, false, [&](TupleTableSlot* slot) {
            TupleTableSlot* row = map != nullptr ? execute_attr_map_slot(map->attrMap, slot, out) : slot;
            slot_getallattrs(row);
            tuplestore_putvalues(result, result_desc, row->tts_values, row->tts_isnull);
            return true;
        });
    ExecDropSingleTupleTableSlot(out);
    table_close(part, AccessShareLock);
}

}  // namespace

Datum pii_audit_trail_group(PG_FUNCTION_ARGS) {
    const int64 first_event_id = PG_GETARG_INT64(0);
    const TimestampTz not_before = PG_GETARG_TIMESTAMPTZ(1);
    const TimestampTz not_after = PG_GETARG_TIMESTAMPTZ(2);
    InitMaterializedSRF(fcinfo, 0);
    auto* rsinfo = reinterpret_cast<ReturnSetInfo*>(fcinfo->resultinfo);
    Oid parent = trail_groups_oid();
    Relation parent_rel = table_open(parent, AccessShareLock);
    if (parent_rel->rd_rel->relkind != RELKIND_PARTITIONED_TABLE) {
        // Not partitioned (not a layout this version makes): read it as one partition.
        table_close(parent_rel, AccessShareLock);
        fetch_from(parent, first_event_id, rsinfo->setDesc, rsinfo->setResult);
        PG_RETURN_VOID();
    }
    PartitionDesc desc = RelationGetPartitionDesc(parent_rel, true);
    PartitionBoundInfo bounds = desc->boundinfo;
    if (not_before <= not_after && bounds != nullptr &&
        bounds->strategy == PARTITION_STRATEGY_RANGE) {
        // Range bounds: indexes[i] is the partition whose upper bound is datums[i] and whose
        // lower bound is datums[i - 1]; a MINVALUE or MAXVALUE bound is open.
        auto bound = [&](int i, bool* open) -> TimestampTz {
            *open = bounds->kind != nullptr &&
                    bounds->kind[i][0] != PARTITION_RANGE_DATUM_VALUE;
            return *open ? 0 : DatumGetTimestampTz(bounds->datums[i][0]);
        };
        for (int i = 0; i < bounds->nindexes; ++i) {
            const int part = bounds->indexes[i];
            if (part < 0 || !desc->is_leaf[part]) continue;
            bool open_low = true, open_high = true;
            TimestampTz low = i > 0 ? bound(i - 1, &open_low) : 0;
            TimestampTz high = i < bounds->ndatums ? bound(i, &open_high) : 0;
            if (i > 0 && !open_low && not_after < low) continue;
            if (i < bounds->ndatums && !open_high && not_before >= high) continue;
            fetch_from(desc->oids[part], first_event_id, rsinfo->setDesc, rsinfo->setResult);
        }
        if (bounds->default_index >= 0 && desc->is_leaf[bounds->default_index])
            fetch_from(desc->oids[bounds->default_index], first_event_id, rsinfo->setDesc,
                       rsinfo->setResult);
    }
    table_close(parent_rel, AccessShareLock);
    PG_RETURN_VOID();
}

// ---------------------------------------------------------------- windows of ids
// Pulls by id (events_after, export) and the next group after an id: the same reason as above.
// Ids cannot prune months (the trail is partitioned by time), so a query over trail_groups made
// the planner look at every month: 30-50 ms of a new session's first pull over 14 months, more
// with every month kept. Each month's index on first_event_id is probed directly instead (a
// month that holds none of the ids costs one index descent).

Datum pii_audit_groups_in_ids(int64 lo, int64 hi, int64 ends_after) {
    Oid parent = trail_groups_oid();
    Relation parent_rel = table_open(parent, AccessShareLock);
    TupleDesc row_desc = RelationGetDescr(parent_rel);
    const AttrNumber id_att = get_attnum(parent, "first_event_id");
    const AttrNumber count_att = get_attnum(parent, "event_count");
    if (id_att <= 0 || count_att <= 0)
        elog(ERROR, "pii_audit: trail_groups lacks first_event_id or event_count");
    List* tables = group_tables(parent);
    int capacity = 64, n = 0;
    auto* rows = static_cast<Datum*>(palloc(sizeof(Datum) * capacity));
    TupleTableSlot* out = MakeSingleTupleTableSlot(row_desc, &TTSOpsVirtual);
    ListCell* cell;
    foreach (cell, tables) {
        Relation part = table_open(lfirst_oid(cell), AccessShareLock);
        // The partition's columns in the parent's order (a partition may order them otherwise).
        TupleConversionMap* map = convert_tuples_by_name(RelationGetDescr(part), row_desc);
        scan_ids(part, lo, hi, false, [&](TupleTableSlot* slot) {
            TupleTableSlot* row = map != nullptr ? execute_attr_map_slot(map->attrMap, slot, out) : slot;
            slot_getallattrs(row);
            const int64 first = DatumGetInt64(row->tts_values[id_att - 1]);
            const int64 count = DatumGetInt32(row->tts_values[count_att - 1]);
            if (first + count <= ends_after) return true;  // ends before the window
            if (n == capacity) {
                capacity *= 2;
                rows = static_cast<Datum*>(repalloc(rows, sizeof(Datum) * capacity));
            }
            HeapTuple tuple = heap_form_tuple(row_desc, row->tts_values, row->tts_isnull);
            rows[n++] = heap_copy_tuple_as_datum(tuple, row_desc);
            heap_freetuple(tuple);
            return true;
        });
        if (map != nullptr) free_conversion_map(map);
        table_close(part, AccessShareLock);
    }
    ExecDropSingleTupleTableSlot(out);
    list_free(tables);
    const Oid row_type = row_desc->tdtypeid;
    table_close(parent_rel, AccessShareLock);
    int16 typlen;
    bool typbyval;
    char typalign;
    get_typlenbyvalalign(row_type, &typlen, &typbyval, &typalign);
    ArrayType* array = construct_array(rows, n, row_type, typlen, typbyval, typalign);
    return PointerGetDatum(array);
}

Oid pii_audit_groups_array_type(void) {
    Oid row_type = get_rel_type_id(trail_groups_oid());
    Oid array_type = get_array_type(row_type);
    if (!OidIsValid(array_type)) elog(ERROR, "pii_audit: trail_groups has no array type");
    return array_type;
}

int64 pii_audit_next_group_id(int64 after) {
    List* tables = group_tables(trail_groups_oid());
    int64 best = -1;
    ListCell* cell;
    foreach (cell, tables) {
        Relation part = table_open(lfirst_oid(cell), AccessShareLock);
        const AttrNumber id_att = get_attnum(RelationGetRelid(part), "first_event_id");
        // Within this table, nothing after the best found elsewhere can beat it.
        const bool bounded = best >= 0;
        scan_ids(part, after, bounded ? best - 1 : 0, !bounded, [&](TupleTableSlot* slot) {
            bool isnull;
            const int64 id = DatumGetInt64(slot_getattr(slot, id_att, &isnull));
            if (!isnull && (best < 0 || id < best)) best = id;
            return false;  // the index is in id order: the first row is the smallest
        });
        table_close(part, AccessShareLock);
    }
    list_free(tables);
    return best;
}

// _tail_groups(after bigint, subject_hash bigint)
//   RETURNS TABLE (first_event_id bigint, min_time timestamptz)
// The groups after `after` (the subject index's last slice) that recorded the subject or may have
// read it (group_may_hold_subject): what subject_access reads beyond the index. Each month's
// index is probed directly, so no query plans every month (about 12M instructions of a new
// session's first subject_access over 14 months went to planning this part alone).
extern "C" {
PGDLLEXPORT Datum pii_audit_tail_groups(PG_FUNCTION_ARGS);
PG_FUNCTION_INFO_V1(pii_audit_tail_groups);
}

Datum pii_audit_tail_groups(PG_FUNCTION_ARGS) {
    const int64 after = PG_GETARG_INT64(0);
    const int64 hash = PG_GETARG_INT64(1);
    InitMaterializedSRF(fcinfo, 0);
    auto* rsinfo = reinterpret_cast<ReturnSetInfo*>(fcinfo->resultinfo);
    List* tables = group_tables(trail_groups_oid());
    MemoryContext per_row = AllocSetContextCreate(CurrentMemoryContext, "pii_audit tail group",
                                                  ALLOCSET_DEFAULT_SIZES);
    ListCell* cell;
    foreach (cell, tables) {
        Relation part = table_open(lfirst_oid(cell), AccessShareLock);
        const Oid relid = RelationGetRelid(part);
        const AttrNumber id_att = get_attnum(relid, "first_event_id");
        const AttrNumber time_att = get_attnum(relid, "min_time");
        const AttrNumber payload_att = get_attnum(relid, "payload");
        if (id_att <= 0 || time_att <= 0 || payload_att <= 0)
            elog(ERROR, "pii_audit: %s lacks a column of trail_groups", RelationGetRelationName(part));
        scan_ids(part, after, 0, true, [&](TupleTableSlot* slot) {
            bool isnull[3];
            const Datum id = slot_getattr(slot, id_att, &isnull[0]);
            const Datum min_time = slot_getattr(slot, time_att, &isnull[1]);
            const Datum payload = slot_getattr(slot, payload_att, &isnull[2]);
            if (isnull[0] || isnull[1] || isnull[2]) return true;
            MemoryContext caller = MemoryContextSwitchTo(per_row);
            bytea* bytes = DatumGetByteaPP(payload);  // detoasted into per_row if stored apart
            const bool hit = pii_audit::group_may_hold_subject(
                std::string_view(VARDATA_ANY(bytes), VARSIZE_ANY_EXHDR(bytes)),
                DatumGetTimestampTz(min_time), hash);
            MemoryContextSwitchTo(caller);
            MemoryContextReset(per_row);
            if (hit) {
                Datum values[2] = {id, min_time};
                bool nulls[2] = {false, false};
                tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
            }
            return true;
        });
        table_close(part, AccessShareLock);
    }
    MemoryContextDelete(per_row);
    list_free(tables);
    PG_RETURN_VOID();
}
