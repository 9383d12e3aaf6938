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
