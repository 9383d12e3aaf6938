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
#include "pii_audit_internal.h"

extern "C" {
#include "access/genam.h"
#include "access/relscan.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/tupconvert.h"
#include "catalog/namespace.h"
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

// Adds the partition's group with that first id, if any, to the result.
void fetch_from(Oid partition, int64 first_event_id, TupleDesc result_desc,
                Tuplestorestate* result) {
    Relation part = table_open(partition, AccessShareLock);
    Oid index_oid = event_id_index(part);
    if (!OidIsValid(index_oid))
        ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                        errmsg("pii_audit: partition %s has no index on first_event_id",
                               RelationGetRelationName(part)),
                        errhint("ALTER EXTENSION pii_audit UPDATE, or recreate the index.")));
    Relation index = index_open(index_oid, AccessShareLock);
    ScanKeyData key;
    ScanKeyInit(&key, 1, BTEqualStrategyNumber, F_INT8EQ, Int64GetDatum(first_event_id));
    IndexScanDesc scan = index_beginscan(part, index, GetActiveSnapshot(), 1, 0);
    index_rescan(scan, &key, 1, nullptr, 0);
    TupleTableSlot* slot = table_slot_create(part, nullptr);
    // The partition's columns in the parent's order (a partition may order them otherwise).
    TupleConversionMap* map =
        convert_tuples_by_name(RelationGetDescr(part), result_desc);
    TupleTableSlot* out = MakeSingleTupleTableSlot(result_desc, &TTSOpsVirtual);
    while (index_getnext_slot(scan, ForwardScanDirection, slot)) {
        TupleTableSlot* row = slot;
        if (map != nullptr) row = execute_attr_map_slot(map->attrMap, slot, out);
        slot_getallattrs(row);
        tuplestore_putvalues(result, result_desc, row->tts_values, row->tts_isnull);
    }
    ExecDropSingleTupleTableSlot(out);
    ExecDropSingleTupleTableSlot(slot);
    index_endscan(scan);
    index_close(index, AccessShareLock);
    table_close(part, AccessShareLock);
}

}  // namespace

Datum pii_audit_trail_group(PG_FUNCTION_ARGS) {
    const int64 first_event_id = PG_GETARG_INT64(0);
    const TimestampTz not_before = PG_GETARG_TIMESTAMPTZ(1);
    const TimestampTz not_after = PG_GETARG_TIMESTAMPTZ(2);
    InitMaterializedSRF(fcinfo, 0);
    auto* rsinfo = reinterpret_cast<ReturnSetInfo*>(fcinfo->resultinfo);
    Oid nsp = get_namespace_oid("pii_audit", false);
    Oid parent = get_relname_relid("trail_groups", nsp);
    if (!OidIsValid(parent))
        ereport(ERROR, (errcode(ERRCODE_UNDEFINED_TABLE),
                        errmsg("pii_audit: table pii_audit.trail_groups does not exist")));
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
