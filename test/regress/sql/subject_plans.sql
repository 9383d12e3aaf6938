-- Plans of statements that read keyed tables are PostgreSQL's own: parallel workers hand the
-- subjects of the rows they scanned to the leader, and index-only scans are tapped on indexes
-- that hold the key. Each statement runs with its parallel (or index-only) plan and again
-- serially; both events must name the same subjects.
CREATE TABLE plan_people (id integer PRIMARY KEY, name text, city text);
INSERT INTO plan_people SELECT g, 'p-' || g, 'city-' || (g % 50) FROM generate_series(1, 6000) g;
CREATE TABLE plan_codes (phone text, person_id integer, code text);
INSERT INTO plan_codes
SELECT '1390' || lpad(g::text, 7, '0'), g % 6000 + 1, lpad((g * 7919 % 1000000)::text, 6, '0')
FROM generate_series(1, 8000) g;
CREATE INDEX plan_people_id_name ON plan_people (id, name);
CREATE INDEX plan_people_name ON plan_people (name);
CREATE INDEX plan_codes_phone_code ON plan_codes (phone, code);
SECURITY LABEL FOR pii ON COLUMN plan_people.id IS 'subject_key';
SECURITY LABEL FOR pii ON COLUMN plan_people.name IS 'name';
SECURITY LABEL FOR pii ON COLUMN plan_codes.phone IS 'phone, subject_key';
SECURITY LABEL FOR pii ON COLUMN plan_codes.code IS 'verification_code';
VACUUM ANALYZE plan_people, plan_codes;
-- Identifiers and their hashes, in a table without labels (reading it records nothing).
CREATE TABLE plan_known AS
SELECT id::text AS identifier, pii_audit.subject_hash(id::text) AS h FROM plan_people
UNION ALL SELECT phone, pii_audit.subject_hash(phone) FROM plan_codes;
-- Every subject read here is stored, so the lists can be compared whole.
SET pii_audit.max_subjects_per_event = 20000;

-- Pairs of events (same statement, parallel then serial) since the previous call.
CREATE FUNCTION parallel_vs_serial()
RETURNS TABLE (relation text, parallel_count bigint, serial_count bigint, estimated boolean,
               truncated boolean, same_subjects boolean)
LANGUAGE plpgsql AS $$
DECLARE
    since bigint := advance_seen();
BEGIN
    RETURN QUERY
        WITH e AS (
            SELECT ev.*, row_number() OVER (PARTITION BY ev.relation ORDER BY ev.event_id) AS n
            FROM pii_audit.events ev WHERE ev.event_id > since AND ev.kind = 'read')
        SELECT p.relation, p.subject_count, s.subject_count,
               p.subject_count_estimated OR s.subject_count_estimated,
               p.subjects_truncated OR s.subjects_truncated,
               ARRAY(SELECT unnest(p.subjects) ORDER BY 1) = ARRAY(SELECT unnest(s.subjects) ORDER BY 1)
        FROM e p JOIN e s ON s.relation = p.relation AND p.n = 1 AND s.n = 2
        ORDER BY 1;
END
$$;

-- The subjects of the read events since the previous call, by identifier.
CREATE FUNCTION plan_subjects()
RETURNS TABLE (relation text, subject_count bigint, estimated boolean, truncated boolean,
               subjects text[])
LANGUAGE plpgsql AS $$
DECLARE
    since bigint := advance_seen();
BEGIN
    RETURN QUERY
        SELECT e.relation, e.subject_count, e.subject_count_estimated, e.subjects_truncated,
               ARRAY(SELECT coalesce(k.identifier, '?') FROM unnest(e.subjects) s(h)
                     LEFT JOIN plan_known k ON k.h = s.h ORDER BY 1)
        FROM pii_audit.events e
        WHERE e.event_id > since AND e.kind = 'read' ORDER BY e.event_id;
END
$$;

-- Only the plan's shape and how many workers ran (rows per worker vary from run to run).
CREATE FUNCTION plan_shape(query text) RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
    line text;
BEGIN
    FOR line IN EXECUTE 'EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) ' || query LOOP
        CONTINUE WHEN line ~ '^\s*(Rows Removed|Buckets|Worker \d|Sort Method|Heap Fetches|Filter|Hash Cond|Index Cond|Sort Key|Batches)';
        RETURN NEXT regexp_replace(line, '\s*\(actual.*\)$', '');
    END LOOP;
END
$$;
SELECT count(*) > 0 AS ready FROM plan_subjects();

SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SET min_parallel_index_scan_size = 0;
SET max_parallel_workers_per_gather = 2;
-- The leader scans nothing itself: every subject below reaches it from a worker.
SET parallel_leader_participation = off;

-- A parallel sequential scan under Gather.
EXPLAIN (COSTS OFF) SELECT name FROM plan_people WHERE id % 1000 = 0;
SELECT plan_shape('SELECT name FROM plan_people WHERE id % 1000 = 0');
SELECT count(*) FROM plan_subjects();  -- (the plan_shape run, recorded like any read)
SELECT name FROM plan_people WHERE id % 1000 = 0 ORDER BY name COLLATE "C";
SET max_parallel_workers_per_gather = 0;
SELECT name FROM plan_people WHERE id % 1000 = 0 ORDER BY name COLLATE "C";
SET max_parallel_workers_per_gather = 2;
SELECT * FROM parallel_vs_serial();

-- Gather Merge over a parallel sort: the workers read every row (6000 subjects).
EXPLAIN (COSTS OFF) SELECT id, name FROM plan_people ORDER BY city DESC, id LIMIT 3;
SELECT plan_shape('SELECT id, name FROM plan_people ORDER BY city DESC, id LIMIT 3');
SELECT count(*) FROM plan_subjects();
SELECT id, name FROM plan_people ORDER BY city DESC, id LIMIT 3;
SET max_parallel_workers_per_gather = 0;
SELECT id, name FROM plan_people ORDER BY city DESC, id LIMIT 3;
SET max_parallel_workers_per_gather = 2;
SELECT * FROM parallel_vs_serial();

-- A parallel aggregate (partial aggregates in the workers, combined in the leader).
EXPLAIN (COSTS OFF) SELECT city, count(name) FROM plan_people GROUP BY city ORDER BY city LIMIT 2;
SELECT plan_shape('SELECT city, count(name) FROM plan_people GROUP BY city ORDER BY city LIMIT 2');
SELECT count(*) FROM plan_subjects();
SELECT city, count(name) FROM plan_people GROUP BY city ORDER BY city LIMIT 2;
SET max_parallel_workers_per_gather = 0;
SELECT city, count(name) FROM plan_people GROUP BY city ORDER BY city LIMIT 2;
SET max_parallel_workers_per_gather = 2;
SELECT * FROM parallel_vs_serial();

-- A parallel hash join of two keyed tables; each side's scan reads every row.
SET enable_mergejoin = off;
SET enable_nestloop = off;
EXPLAIN (COSTS OFF) SELECT count(c.code), count(p.name) FROM plan_people p JOIN plan_codes c ON c.person_id = p.id;
SELECT plan_shape('SELECT count(c.code), count(p.name) FROM plan_people p JOIN plan_codes c ON c.person_id = p.id');
SELECT count(*) FROM plan_subjects();
SELECT count(c.code), count(p.name) FROM plan_people p JOIN plan_codes c ON c.person_id = p.id;
SET max_parallel_workers_per_gather = 0;
SELECT count(c.code), count(p.name) FROM plan_people p JOIN plan_codes c ON c.person_id = p.id;
SET max_parallel_workers_per_gather = 2;
SELECT * FROM parallel_vs_serial();
RESET enable_mergejoin;
RESET enable_nestloop;

-- With the leader taking part too, and past the stored-hash limit: the counts still agree
-- (which hashes are kept then depends on who read first, so only counts are compared).
SET parallel_leader_participation = on;
SET pii_audit.max_subjects_per_event = 100;
SELECT count(name) FROM plan_people WHERE id % 2 = 0;
SET max_parallel_workers_per_gather = 0;
SELECT count(name) FROM plan_people WHERE id % 2 = 0;
SET max_parallel_workers_per_gather = 2;
SELECT relation, parallel_count, serial_count, estimated, truncated FROM parallel_vs_serial();
SET pii_audit.max_subjects_per_event = 20000;

RESET parallel_setup_cost;
RESET parallel_tuple_cost;
RESET min_parallel_table_scan_size;
RESET min_parallel_index_scan_size;
RESET parallel_leader_participation;

-- Index-only scans on indexes that hold the key: the key is read from the index tuple.
SET enable_seqscan = off;
SET enable_bitmapscan = off;
EXPLAIN (COSTS OFF) SELECT name FROM plan_people WHERE id BETWEEN 10 AND 14 ORDER BY id;
SELECT name FROM plan_people WHERE id BETWEEN 10 AND 14 ORDER BY id;
EXPLAIN (COSTS OFF) SELECT code FROM plan_codes WHERE phone IN ('13900000005', '13900000007') ORDER BY code;
SELECT code FROM plan_codes WHERE phone IN ('13900000005', '13900000007') ORDER BY code;
-- The key is not selected, and the index-only scan still finds it in the index tuple.
EXPLAIN (COSTS OFF) SELECT count(name) FROM plan_people WHERE id <= 3;
SELECT count(name) FROM plan_people WHERE id <= 3;
SELECT * FROM plan_subjects();

-- An index without the key column (plan_people_name) keeps its index-only scan too: the key is
-- read from the table row each index entry points to.
EXPLAIN (COSTS OFF) SELECT name FROM plan_people WHERE name IN ('p-21', 'p-22');
SELECT name FROM plan_people WHERE name IN ('p-21', 'p-22') ORDER BY name;
SELECT * FROM plan_subjects();
-- After a HOT update the index entry leads to a chain whose visible member is a heap-only
-- tuple; the index-only scan visits it (the page is not all-visible), and so does the tap.
UPDATE plan_people SET city = city || '' WHERE id = 23;
EXPLAIN (COSTS OFF) SELECT name FROM plan_people WHERE name = 'p-23';
SELECT name FROM plan_people WHERE name = 'p-23';
SELECT * FROM plan_subjects();

-- A keyed table reached through an inlined SQL set-returning function: the planner sees the
-- table only after inlining (it used to pick an index-only scan the tap could not read).
CREATE FUNCTION plan_people_named(pattern text) RETURNS SETOF plan_people
LANGUAGE sql STABLE AS 'SELECT * FROM plan_people WHERE name = ANY (string_to_array(pattern, $$,$$))';
EXPLAIN (COSTS OFF) SELECT name FROM plan_people_named('p-31,p-32');
SELECT name FROM plan_people_named('p-31,p-32') ORDER BY name;
SELECT * FROM plan_subjects();
CREATE FUNCTION plan_people_ids(low int, high int) RETURNS TABLE (id int)
LANGUAGE sql STABLE AS 'SELECT id FROM plan_people WHERE id BETWEEN low AND high';
EXPLAIN (COSTS OFF) SELECT count(*) FROM plan_people_ids(40, 44) i JOIN plan_people p USING (id);
SELECT count(name) FROM plan_people_ids(40, 44) i JOIN plan_people p USING (id);
SELECT * FROM plan_subjects();
RESET enable_seqscan;
RESET enable_bitmapscan;
RESET max_parallel_workers_per_gather;
RESET pii_audit.max_subjects_per_event;
