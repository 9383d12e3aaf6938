// Which columns of a relation carry `pii` labels, cached per backend so the per-statement cost of
// auditing is one hash lookup. Entries are dropped on relcache invalidation: the label provider
// sends one for the labelled relation when a label changes, and DDL sends its own.
#include "pii_audit_internal.h"
#include "boundary.h"

extern "C" {
#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/indexing.h"
#include "catalog/pg_class.h"
#include "catalog/pg_inherits.h"
#include "catalog/pg_seclabel.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/syscache.h"
}


namespace {

HTAB* cache = nullptr;
// The entry found last: a statement asks for the same relation several times (its reads, its
// row-security check, its subject taps). Forgotten whenever an entry is dropped.
LabelCacheEntry* last_found = nullptr;

// Invalidations that arrive while an entry is being built (catalog access processes them) are
// remembered so a build that raced with a change to its own family is redone.
constexpr int kMaxRecordedInvals = 16;
bool loading = false;
int recorded_invals = 0;
Oid recorded_inval[kMaxRecordedInvals];

void drop_entry(LabelCacheEntry* entry) {
    last_found = nullptr;
    if (entry->context) MemoryContextDelete(entry->context);
    Oid relid = entry->relid;
    hash_search(cache, &relid, HASH_REMOVE, nullptr);
}

void on_relcache_inval(Datum, Oid relid) {
    if (loading) {
        if (recorded_invals < kMaxRecordedInvals)
            recorded_inval[recorded_invals++] = relid;
        else
            recorded_inval[0] = InvalidOid;  // too many to track: treat as "everything"
    }
    if (cache == nullptr) return;
    HASH_SEQ_STATUS status;
    hash_seq_init(&status, cache);
    while (auto* entry = static_cast<LabelCacheEntry*>(hash_seq_search(&status))) {
        bool affected = relid == InvalidOid || entry->relid == relid;
        for (int i = 0; !affected && i < entry->nfamily; ++i) affected = entry->family[i] == relid;
        if (affected) drop_entry(entry);
    }
}

// Parents up the inheritance/partition tree, nearest first.
List* ancestors_of(Oid relid) {
    List* result = NIL;
    List* frontier = list_make1_oid(relid);
    Relation inherits = table_open(InheritsRelationId, AccessShareLock);
    while (frontier != NIL) {
        Oid child = linitial_oid(frontier);
        frontier = list_delete_first(frontier);
        ScanKeyData key;
        ScanKeyInit(&key, Anum_pg_inherits_inhrelid, BTEqualStrategyNumber, F_OIDEQ,
                    ObjectIdGetDatum(child));
        SysScanDesc scan =
            systable_beginscan(inherits, InheritsRelidSeqnoIndexId, true, nullptr, 1, &key);
        HeapTuple tuple;
        while ((tuple = systable_getnext(scan)) != nullptr) {
            Oid parent = reinterpret_cast<Form_pg_inherits>(GETSTRUCT(tuple))->inhparent;
            if (!list_member_oid(result, parent) && parent != relid) {
                result = lappend_oid(result, parent);
                frontier = lappend_oid(frontier, parent);
            }
        }
        systable_endscan(scan);
    }
    table_close(inherits, AccessShareLock);
    return result;
}

struct PendingColumn {
    AttrNumber attnum;
    const char* name;
    List* categories;  // of char*
    bool subject_key;
};

// Merges the labels stored on `source`'s columns into `columns`, matched by name onto `relid`.
void merge_labels_of(Relation seclabel, Oid source, Oid relid, List** columns) {
    ScanKeyData keys[2];
    ScanKeyInit(&keys[0], Anum_pg_seclabel_objoid, BTEqualStrategyNumber, F_OIDEQ,
                ObjectIdGetDatum(source));
    ScanKeyInit(&keys[1], Anum_pg_seclabel_classoid, BTEqualStrategyNumber, F_OIDEQ,
                ObjectIdGetDatum(RelationRelationId));
    SysScanDesc scan =
        systable_beginscan(seclabel, SecLabelObjectIndexId, true, nullptr, 2, keys);
    HeapTuple tuple;
    while ((tuple = systable_getnext(scan)) != nullptr) {
        int32 subid = reinterpret_cast<FormData_pg_seclabel*>(GETSTRUCT(tuple))->objsubid;
        if (subid <= 0) continue;
        bool isnull;
        Datum provider =
            heap_getattr(tuple, Anum_pg_seclabel_provider, RelationGetDescr(seclabel), &isnull);
        if (isnull || strcmp(TextDatumGetCString(provider), "pii") != 0) continue;
        Datum label_datum =
            heap_getattr(tuple, Anum_pg_seclabel_label, RelationGetDescr(seclabel), &isnull);
        if (isnull) continue;
        char* name = get_attname(source, static_cast<AttrNumber>(subid), true);
        if (name == nullptr) continue;
        AttrNumber attnum = source == relid ? static_cast<AttrNumber>(subid)
                                            : get_attnum(relid, name);
        if (attnum == InvalidAttrNumber) continue;

        // Labels were validated when set; one that no longer parses still marks the column as
        // personal data rather than silently un-auditing it.
        char* label = TextDatumGetCString(label_datum);
        size_t label_len = strlen(label);
        char* parsed = static_cast<char*>(palloc(label_len + 1));
        size_t parsed_len = 0;
        bool subject_key = false;
        char error[256];
        if (!pii_audit::parse_label_into(label, parsed, label_len + 1, &parsed_len, &subject_key,
                                         error, sizeof error)) {
            static const char kUnparsable[] = "unparsable_label";
            parsed = pstrdup(kUnparsable);
            parsed_len = sizeof kUnparsable;
        }
        PendingColumn* column = nullptr;
        ListCell* cell;
        foreach (cell, *columns) {
            auto* c = static_cast<PendingColumn*>(lfirst(cell));
            if (c->attnum == attnum) column = c;
        }
        if (column == nullptr) {
            column = static_cast<PendingColumn*>(palloc0(sizeof(PendingColumn)));
            column->attnum = attnum;
            column->name = name;
            *columns = lappend(*columns, column);
        }
        column->subject_key |= subject_key;
        for (size_t at = 0; at < parsed_len; at += strlen(parsed + at) + 1) {
            bool seen = false;
            foreach (cell, column->categories)
                seen |= strcmp(static_cast<char*>(lfirst(cell)), parsed + at) == 0;
            if (!seen) column->categories = lappend(column->categories, parsed + at);
        }
    }
    systable_endscan(scan);
}

int compare_attnum(const ListCell* a, const ListCell* b) {
    return static_cast<PendingColumn*>(lfirst(a))->attnum -
           static_cast<PendingColumn*>(lfirst(b))->attnum;
}

// Builds the entry's contents in a scratch context; only a relation with labels keeps memory.
LabelCacheEntry build_entry(Oid relid, MemoryContext scratch) {
    LabelCacheEntry built{};
    built.relid = relid;
    MemoryContext old = MemoryContextSwitchTo(scratch);

    List* family = ancestors_of(relid);
    if (has_subclass(relid)) {
        List* descendants = find_all_inheritors(relid, NoLock, nullptr);
        ListCell* cell;
        foreach (cell, descendants)
            if (lfirst_oid(cell) != relid) family = lappend_oid(family, lfirst_oid(cell));
    }
    List* columns = NIL;
    Relation seclabel = table_open(SecLabelRelationId, AccessShareLock);
    merge_labels_of(seclabel, relid, relid, &columns);
    ListCell* cell;
    foreach (cell, family) merge_labels_of(seclabel, lfirst_oid(cell), relid, &columns);
    table_close(seclabel, AccessShareLock);
    MemoryContextSwitchTo(old);

    built.nfamily = list_length(family);
    if (columns == NIL && built.nfamily == 0) return built;

    built.context = AllocSetContextCreate(CacheMemoryContext, "pii_audit label cache entry",
                                          ALLOCSET_SMALL_SIZES);
    old = MemoryContextSwitchTo(built.context);
    built.family = static_cast<Oid*>(palloc(sizeof(Oid) * (built.nfamily + 1)));
    int i = 0;
    foreach (cell, family) built.family[i++] = lfirst_oid(cell);
    if (columns != NIL) {
        list_sort(columns, compare_attnum);
        built.ncolumns = list_length(columns);
        built.columns =
            static_cast<LabelledColumn*>(palloc0(sizeof(LabelledColumn) * built.ncolumns));
        i = 0;
        foreach (cell, columns) {
            auto* pending = static_cast<PendingColumn*>(lfirst(cell));
            LabelledColumn& column = built.columns[i++];
            column.attnum = pending->attnum;
            column.name = pstrdup(pending->name);
            column.subject_key = pending->subject_key;
            StringInfoData list;
            initStringInfo(&list);
            ListCell* c;
            foreach (c, pending->categories) {
                const char* category = static_cast<char*>(lfirst(c));
                appendBinaryStringInfo(&list, category, strlen(category) + 1);
            }
            column.categories = list.data;
            column.categories_len = list.len;
            built.has_categories |= list.len > 0;
            built.has_subject_key |= column.subject_key;
        }
        HeapTuple tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
        if (HeapTupleIsValid(tuple)) {
            built.row_security = reinterpret_cast<Form_pg_class>(GETSTRUCT(tuple))->relrowsecurity;
            ReleaseSysCache(tuple);
        }
        char* schema = get_namespace_name(get_rel_namespace(relid));
        char* name = get_rel_name(relid);
        built.qualified_name = pstrdup(
            quote_qualified_identifier(schema ? schema : "?", name ? name : "?"));
    }
    MemoryContextSwitchTo(old);
    return built;
}

bool raced_with_invalidation(const LabelCacheEntry& built) {
    for (int i = 0; i < recorded_invals; ++i) {
        Oid relid = recorded_inval[i];
        if (relid == InvalidOid || relid == built.relid) return true;
        for (int f = 0; f < built.nfamily; ++f)
            if (built.family[f] == relid) return true;
    }
    return false;
}

}  // namespace

void pii_audit_label_cache_init(void) {
    CacheRegisterRelcacheCallback(on_relcache_inval, 0);
}

const LabelCacheEntry* pii_audit_label_cache_lookup(Oid relid) {
    if (cache == nullptr) {
        HASHCTL ctl{};
        ctl.keysize = sizeof(Oid);
        ctl.entrysize = sizeof(LabelCacheEntry);
        ctl.hcxt = CacheMemoryContext;
        cache = hash_create("pii_audit label cache", 256, &ctl,
                            HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
    }
    if (last_found != nullptr && last_found->relid == relid) return last_found;
    auto* entry = static_cast<LabelCacheEntry*>(hash_search(cache, &relid, HASH_FIND, nullptr));
    if (entry) return last_found = entry;

    MemoryContext scratch = AllocSetContextCreate(CurrentMemoryContext,
                                                  "pii_audit label load", ALLOCSET_SMALL_SIZES);
    LabelCacheEntry built{};
    for (int attempt = 0;; ++attempt) {
        loading = true;
        recorded_invals = 0;
        pii_audit::boundary::pg_finally([&] { built = build_entry(relid, scratch); },
                                        [] { loading = false; });
        if (!raced_with_invalidation(built) || attempt == 3) break;
        if (built.context) MemoryContextDelete(built.context);
        MemoryContextReset(scratch);
    }
    MemoryContextDelete(scratch);
    bool found;
    entry = static_cast<LabelCacheEntry*>(hash_search(cache, &relid, HASH_ENTER, &found));
    *entry = built;
    return last_found = entry;
}

// Without catalog access (for error reporting): the cached entry whose relation has this
// schema and name, or nullptr when no statement of this backend looked at it yet.
const LabelCacheEntry* pii_audit_label_cache_find_cached(const char* schema, const char* name) {
    if (cache == nullptr || schema == nullptr || name == nullptr) return nullptr;
    const char* wanted = quote_qualified_identifier(schema, name);
    HASH_SEQ_STATUS status;
    hash_seq_init(&status, cache);
    while (auto* entry = static_cast<LabelCacheEntry*>(hash_seq_search(&status))) {
        if (entry->has_categories && entry->qualified_name != nullptr &&
            strcmp(entry->qualified_name, wanted) == 0) {
            hash_seq_term(&status);
            return entry;
        }
    }
    return nullptr;
}

namespace {

// Appends item (len bytes, no NUL inside) and a NUL to a list unless the list has it already.
void append_list_item(StringInfo list, const char* item, int len) {
    for (int at = 0; at < list->len; at += static_cast<int>(strlen(list->data + at)) + 1)
        if (strcmp(list->data + at, item) == 0) return;
    appendBinaryStringInfo(list, item, len);
    appendStringInfoChar(list, '\0');
}

}  // namespace

void pii_audit_append_column(StringInfo columns, StringInfo categories,
                             const LabelledColumn& column) {
    append_list_item(columns, column.name, static_cast<int>(strlen(column.name)));
    for (int at = 0; at < column.categories_len;) {
        int len = static_cast<int>(strlen(column.categories + at));
        append_list_item(categories, column.categories + at, len);
        at += len + 1;
    }
}

const LabelLists* pii_audit_label_lists(const LabelCacheEntry* entry, uint64 mask) {
    for (LabelLists& memo : entry->memo)
        if (memo.mask == mask) return &memo;
    StringInfoData columns, categories;
    initStringInfo(&columns);
    initStringInfo(&categories);
    for (int i = 0; i < entry->ncolumns && i < 64; ++i) {
        if ((mask & (uint64{1} << i)) != 0)
            pii_audit_append_column(&columns, &categories, entry->columns[i]);
    }
    char* kept_columns = static_cast<char*>(MemoryContextAlloc(entry->context, columns.len + 1));
    char* kept_categories =
        static_cast<char*>(MemoryContextAlloc(entry->context, categories.len + 1));
    memcpy(kept_columns, columns.data, columns.len + 1);
    memcpy(kept_categories, categories.data, categories.len + 1);
    LabelLists& slot = entry->memo[entry->memo_next];
    entry->memo_next = (entry->memo_next + 1) % kLabelListMemos;
    if (slot.mask != 0) {
        pfree(slot.columns);
        pfree(slot.categories);
    }
    slot = LabelLists{mask, kept_columns, columns.len, kept_categories, categories.len};
    pfree(columns.data);
    pfree(categories.data);
    return &slot;
}
