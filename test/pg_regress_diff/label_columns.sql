-- label_columns.sql: run by run.sh, as a superuser, in template1 of cluster B (after CREATE
-- EXTENSION pii_audit), so that the `regression` database and every database the suite creates
-- inherit it.
--
-- An event trigger labels every column of every table the suite creates or alters, so that
-- PostgreSQL's own regression suite exercises pii_audit's capture paths (labelled reads,
-- subject tracking, label changes and drops) on thousands of statements nobody wrote for it:
--   every column:                          'name'
--   the first int2/int4/int8 column:       'name, subject_key'
-- Only the relation kinds that accept pii labels (tables, partitioned tables, materialized
-- views, foreign tables: can_carry_labels() in extension/capture/label_provider.cpp), including
-- partitions and inheritance children reached through pg_inherits (ALTER TABLE parent ADD
-- COLUMN adds the column to them too), and temporary tables (labels are accepted on them).
--
-- The trigger must never change the suite's results, so:
--   - it is owned by the bootstrap superuser and SECURITY DEFINER (the suite runs DDL as many
--     unprivileged roles, and only superusers may set pii labels), with a pinned search_path
--     (the suite creates schemas, functions and operators that could otherwise be picked up);
--   - every label is set in its own EXCEPTION block, and the whole body in another one: a
--     refused label (read-only transaction, a relation dropped meanwhile...) is skipped and
--     logged at LOG level, never raised;
--   - it fires only for the command tags that can create columns (WHEN TAG), and sets a label
--     only on columns that have none yet, so other DDL takes no extra lock;
--   - it says nothing to the client (no NOTICE), and it is named so that it fires after the
--     suite's own event triggers (they fire in name order), with a name short enough not to
--     widen the suite's listings of event triggers (event_trigger.sql).
-- The function lives in schema pii_audit (which the extension creates anyway), so that no
-- extra schema shows up in the suite's catalog listings.

CREATE FUNCTION pii_audit.regress_label_new_columns() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    rel record;
    col record;
    key_attnum int2;
BEGIN
    FOR rel IN
        WITH RECURSIVE touched(relid) AS (
            SELECT objid FROM pg_event_trigger_ddl_commands()
             WHERE classid = 'pg_catalog.pg_class'::regclass AND NOT in_extension
            UNION
            SELECT i.inhrelid FROM pg_inherits i JOIN touched t ON i.inhparent = t.relid
        )
        SELECT c.oid, c.oid::regclass AS name
          FROM touched t JOIN pg_class c ON c.oid = t.relid
         WHERE c.relkind IN ('r', 'p', 'm', 'f')
    LOOP
        SELECT min(attnum) INTO key_attnum FROM pg_attribute
         WHERE attrelid = rel.oid AND attnum > 0 AND NOT attisdropped
           AND atttypid IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype);
        FOR col IN
            SELECT a.attnum, a.attname FROM pg_attribute a
             WHERE a.attrelid = rel.oid AND a.attnum > 0 AND NOT a.attisdropped
               AND NOT EXISTS (SELECT FROM pg_seclabel s
                                WHERE s.classoid = 'pg_catalog.pg_class'::regclass
                                  AND s.objoid = rel.oid AND s.objsubid = a.attnum
                                  AND s.provider = 'pii')
             ORDER BY a.attnum
        LOOP
            BEGIN
                EXECUTE format('SECURITY LABEL FOR pii ON COLUMN %s.%I IS %L', rel.name,
                               col.attname,
                               CASE WHEN col.attnum = key_attnum THEN 'name, subject_key'
                                    ELSE 'name' END);
            EXCEPTION WHEN OTHERS THEN
                RAISE LOG 'pii_audit_regress: label on %.% refused: %', rel.name, col.attname,
                    SQLERRM;
            END;
        END LOOP;
    END LOOP;
EXCEPTION WHEN OTHERS THEN
    RAISE LOG 'pii_audit_regress: labelling skipped: %', SQLERRM;
END
$fn$;

REVOKE ALL ON FUNCTION pii_audit.regress_label_new_columns() FROM PUBLIC;

CREATE EVENT TRIGGER zzz_pii_labels ON ddl_command_end
    WHEN TAG IN ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO', 'ALTER TABLE',
                 'CREATE FOREIGN TABLE', 'ALTER FOREIGN TABLE', 'CREATE MATERIALIZED VIEW',
                 'CREATE SCHEMA')
    EXECUTE FUNCTION pii_audit.regress_label_new_columns();
