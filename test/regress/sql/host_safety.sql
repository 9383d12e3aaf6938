-- Statements that once crashed the server. Each must run, return PostgreSQL's own answer and
-- record its reads, with the subjects of every keyed table read.
CREATE FUNCTION safety_events()
RETURNS TABLE (command text, relation text, row_count bigint, subject_count bigint, status text)
LANGUAGE plpgsql AS $$
DECLARE
    since bigint := advance_seen();
BEGIN
    RETURN QUERY
        SELECT e.command, e.relation, e.row_count, e.subject_count, e.status
        FROM pii_audit.events e
        WHERE e.event_id > since AND e.kind = 'read' ORDER BY e.event_id;
END
$$;
SELECT count(*) >= 0 AS ready FROM safety_events();

-- A scan of an inheritance child that is both read directly and through its keyed parent
-- feeds two events: it used to be wrapped twice, and the wrapper called itself until the
-- stack overflowed (SIGSEGV, every backend restarted).
CREATE TABLE inh_parent (a int, b text);
CREATE TABLE inh_child () INHERITS (inh_parent);
SECURITY LABEL FOR pii ON COLUMN inh_parent.a IS 'name, subject_key';
SECURITY LABEL FOR pii ON COLUMN inh_child.a IS 'name, subject_key';
INSERT INTO inh_parent VALUES (1, 'p');
INSERT INTO inh_child VALUES (1, 'c');
SELECT * FROM inh_parent x JOIN inh_child y USING (a) ORDER BY x.b;
SELECT * FROM safety_events();

-- The same through a partitioned table, a self-join and a UNION of parent and child.
CREATE TABLE part_parent (a int, b text) PARTITION BY RANGE (a);
CREATE TABLE part_low PARTITION OF part_parent FOR VALUES FROM (0) TO (100);
CREATE TABLE part_high PARTITION OF part_parent FOR VALUES FROM (100) TO (200);
SECURITY LABEL FOR pii ON COLUMN part_parent.a IS 'name, subject_key';
SECURITY LABEL FOR pii ON COLUMN part_low.a IS 'name, subject_key';
INSERT INTO part_parent VALUES (1, 'low'), (150, 'high');
SELECT x.b, y.b FROM part_parent x JOIN part_low y USING (a);
SELECT count(*) FROM part_parent x JOIN part_parent y USING (a) JOIN part_low z USING (a);
SELECT a FROM part_parent UNION ALL SELECT a FROM part_low ORDER BY 1;
SELECT * FROM safety_events();

-- Nested: the child scanned inside a subquery of a query on the parent.
SELECT a, (SELECT count(*) FROM inh_child c WHERE c.a = p.a) FROM inh_parent p ORDER BY a;
SELECT * FROM safety_events();

-- COPY of a keyed table runs through the executor (so its subjects are known), but it must stay
-- PostgreSQL's COPY: the same columns, the same errors, in the same order.
CREATE TABLE copy_keyed (id int, phone text, doubled int GENERATED ALWAYS AS (id * 2) STORED);
SECURITY LABEL FOR pii ON COLUMN copy_keyed.id IS 'subject_key';
SECURITY LABEL FOR pii ON COLUMN copy_keyed.phone IS 'phone';
INSERT INTO copy_keyed VALUES (1, '13800000001'), (2, '13800000002');
COPY copy_keyed TO stdout;
COPY copy_keyed (phone, id) TO stdout;
COPY copy_keyed (id, doubled) TO stdout;
COPY copy_keyed (id, id) TO stdout;
COPY copy_keyed (id, nosuch) TO stdout;
SELECT * FROM safety_events();
-- Privileges are checked before row-level security, as PostgreSQL's COPY does.
CREATE ROLE regress_pii_copier;
ALTER TABLE copy_keyed ENABLE ROW LEVEL SECURITY;
CREATE POLICY copy_keyed_odd ON copy_keyed USING (id % 2 = 1);
SET ROLE regress_pii_copier;
SET row_security = off;
COPY copy_keyed TO stdout;
RESET row_security;
COPY copy_keyed TO stdout;
RESET ROLE;
GRANT SELECT ON copy_keyed TO regress_pii_copier;
SET ROLE regress_pii_copier;
COPY copy_keyed TO stdout;
SET row_security = off;
COPY copy_keyed TO stdout;
RESET row_security;
RESET ROLE;
SELECT * FROM safety_events();
DROP TABLE copy_keyed;
DROP ROLE regress_pii_copier;

-- The worker reports its inserts to the cumulative statistics, so that autovacuum and ANALYZE
-- know the trail grows (it used to show 0 inserted rows on a 20M-event trail).
DO $$
BEGIN
    FOR i IN 1..300 LOOP
        PERFORM pg_stat_clear_snapshot();
        EXIT WHEN (SELECT sum(n_tup_ins) FROM pg_stat_all_tables
                   WHERE relid IN (SELECT inhrelid FROM pg_inherits
                                   WHERE inhparent = 'pii_audit.trail_groups'::regclass)) > 0;
        PERFORM pg_sleep(0.1);
    END LOOP;
END
$$;
SELECT sum(n_tup_ins) > 0 AS trail_inserts_reported
FROM pg_stat_all_tables WHERE relid IN (SELECT inhrelid FROM pg_inherits
                                        WHERE inhparent = 'pii_audit.trail_groups'::regclass);
