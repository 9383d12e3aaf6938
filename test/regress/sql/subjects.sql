-- Whose rows each statement read. Subjects are shown by matching the stored hashes against the
-- hashes of every identifier the test tables hold, so the expected output names people.
CREATE TABLE subscribers (id integer PRIMARY KEY, name text, phone text UNIQUE, plan text);
INSERT INTO subscribers
SELECT g, 'sub-' || g, '1390000' || lpad(g::text, 4, '0'), CASE WHEN g % 3 = 0 THEN 'gold' ELSE 'basic' END
FROM generate_series(1, 40) g;
CREATE TABLE otp (id serial PRIMARY KEY, phone text NOT NULL, code text NOT NULL);
INSERT INTO otp (phone, code)
SELECT '1390000' || lpad((g % 20 + 1)::text, 4, '0'), lpad((g * 7919 % 1000000)::text, 6, '0')
FROM generate_series(1, 60) g;
CREATE INDEX ON otp (phone);
-- subscribers: the key is id; otp: the key is phone, which is also a category.
SECURITY LABEL FOR pii ON COLUMN subscribers.id IS 'subject_key';
SECURITY LABEL FOR pii ON COLUMN subscribers.name IS 'name';
SECURITY LABEL FOR pii ON COLUMN subscribers.phone IS 'phone';
SECURITY LABEL FOR pii ON COLUMN otp.phone IS 'phone, subject_key';
SECURITY LABEL FOR pii ON COLUMN otp.code IS 'verification_code';
ANALYZE subscribers, otp;

CREATE TABLE known_subjects (identifier text, h bigint);
INSERT INTO known_subjects
SELECT id::text, pii_audit.subject_hash(id::text) FROM subscribers
UNION ALL SELECT phone, pii_audit.subject_hash(phone) FROM subscribers;

-- The subject lists of the read events since the previous call.
CREATE FUNCTION new_subjects()
RETURNS TABLE (command text, relation text, row_count bigint, subject_count bigint,
               truncated boolean, subjects text[])
LANGUAGE plpgsql AS $$
DECLARE
    since bigint := advance_seen();
BEGIN
    RETURN QUERY
        SELECT e.command, e.relation, e.row_count, e.subject_count, e.subjects_truncated,
               ARRAY(SELECT coalesce(k.identifier, '?') FROM unnest(e.subjects) s(h)
                     LEFT JOIN known_subjects k ON k.h = s.h ORDER BY 1)
        FROM pii_audit.events e
        WHERE e.event_id > since AND e.kind = 'read' ORDER BY e.event_id;
END
$$;
SELECT count(*) > 0 AS labelled FROM new_events();

-- The key column is not selected; only rows that passed the conditions count.
SELECT phone FROM subscribers WHERE id = 5;
SELECT code FROM otp WHERE phone = '13900000007' ORDER BY code;
SELECT name FROM subscribers WHERE plan = 'gold' AND id < 10 ORDER BY id;
SELECT * FROM new_subjects();

-- A statement that reads no row reads nobody.
SELECT name FROM subscribers WHERE name = 'nobody';
SELECT * FROM new_subjects();

-- A join reading two keyed tables: one event each, with its own subjects.
SET enable_hashjoin = off;
SET enable_mergejoin = off;
SELECT s.name, o.code FROM subscribers s JOIN otp o ON o.phone = s.phone
WHERE s.id IN (2, 3) ORDER BY 1, 2;
RESET enable_hashjoin;
RESET enable_mergejoin;
SELECT * FROM new_subjects();
-- Subjects are taken where rows leave a table's scan: the build side of a hash join counts
-- every row it scanned, matched or not (the statement had them all in hand).
SELECT s.name, o.code FROM subscribers s JOIN otp o ON o.phone = s.phone
WHERE s.id = 2 ORDER BY 1, 2;
SELECT command, relation, row_count, subject_count FROM new_subjects();

-- Subqueries, EXISTS, CTE, UNION.
SELECT name FROM subscribers s WHERE EXISTS (SELECT 1 FROM otp o WHERE o.phone = s.phone AND o.code LIKE '0%') AND id <= 4 ORDER BY 1;
WITH picked AS (SELECT id, name FROM subscribers WHERE id BETWEEN 11 AND 12) SELECT name FROM picked ORDER BY 1;
SELECT name FROM subscribers WHERE id = 1 UNION SELECT name FROM subscribers WHERE id = 40 ORDER BY 1;
SELECT * FROM new_subjects();

-- A view: the base table's rows count.
CREATE VIEW gold_subscribers AS SELECT id, name FROM subscribers WHERE plan = 'gold';
SELECT name FROM gold_subscribers WHERE id > 35 ORDER BY 1;
SELECT * FROM new_subjects();

-- Functions (SQL and dynamic PL/pgSQL), a prepared statement, a cursor.
CREATE FUNCTION subscriber_name(i integer) RETURNS text LANGUAGE sql AS 'SELECT name FROM subscribers WHERE id = i';
CREATE FUNCTION otp_codes(p text) RETURNS SETOF text LANGUAGE plpgsql AS $$
BEGIN RETURN QUERY EXECUTE 'SELECT code FROM otp WHERE phone = $1' USING p; END $$;
SELECT subscriber_name(21);
SELECT count(*) FROM otp_codes('13900000003');
PREPARE by_id(integer) AS SELECT phone FROM subscribers WHERE id = $1;
EXECUTE by_id(22);
BEGIN;
DECLARE c CURSOR FOR SELECT name FROM subscribers WHERE id BETWEEN 30 AND 33 ORDER BY id;
FETCH 2 FROM c;
CLOSE c;
COMMIT;
SELECT * FROM new_subjects();

-- RETURNING, INSERT ... SELECT, CREATE TABLE AS, COPY (query) TO and COPY table TO.
UPDATE subscribers SET plan = plan WHERE id = 8 RETURNING name;
CREATE TEMP TABLE copied AS SELECT name FROM subscribers WHERE id IN (9, 10);
INSERT INTO copied SELECT name FROM subscribers WHERE id = 13;
COPY (SELECT phone FROM subscribers WHERE id = 14) TO STDOUT;
COPY otp (code) TO '/dev/null';
SELECT * FROM new_subjects();

-- EXPLAIN ANALYZE reads too. The unique index on phone holds the key of otp, not of
-- subscribers (whose key is id): it is not used index-only, since that would hide the key.
EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) SELECT phone FROM subscribers WHERE phone = '13900000015';
SELECT * FROM new_subjects();

-- Parallel plans stay: the workers hand the subjects they read to the leader, and the
-- event counts every subject once (more shapes in subject_plans).
CREATE TABLE many_subscribers AS SELECT g AS id, 'm-' || g AS name FROM generate_series(1, 20000) g;
SECURITY LABEL FOR pii ON COLUMN many_subscribers.id IS 'subject_key';
SECURITY LABEL FOR pii ON COLUMN many_subscribers.name IS 'name';
ANALYZE many_subscribers;
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
EXPLAIN (COSTS OFF) SELECT count(name) FROM many_subscribers WHERE id % 7 = 0;
SELECT count(name) FROM many_subscribers WHERE id % 7 = 0;
RESET parallel_setup_cost;
RESET parallel_tuple_cost;
RESET min_parallel_table_scan_size;
SELECT command, relation, row_count, subject_count, truncated, cardinality(subjects) FROM new_subjects();

-- Past pii_audit.max_subjects_per_event: the exact count, the first hashes, and the flag.
SET pii_audit.max_subjects_per_event = 5;
SELECT count(name) FROM subscribers;
SELECT count(*) FROM otp WHERE code <> '';
RESET pii_audit.max_subjects_per_event;
SELECT command, relation, row_count, subject_count, truncated, cardinality(subjects) FROM new_subjects();

-- Partitions: a label on the parent covers each partition's key.
CREATE TABLE roaming (phone text, country text, seen date) PARTITION BY RANGE (seen);
CREATE TABLE roaming_2026a PARTITION OF roaming FOR VALUES FROM ('2026-01-01') TO ('2026-07-01');
CREATE TABLE roaming_2026b PARTITION OF roaming FOR VALUES FROM ('2026-07-01') TO ('2027-01-01');
INSERT INTO roaming VALUES ('13900000001', 'JP', '2026-03-01'), ('13900000002', 'KR', '2026-09-01'),
                           ('13900000002', 'TH', '2026-10-01');
SECURITY LABEL FOR pii ON COLUMN roaming.phone IS 'subject_key';
SECURITY LABEL FOR pii ON COLUMN roaming.country IS 'location';
SELECT country FROM roaming ORDER BY seen;
SELECT * FROM new_subjects();

-- The officer's functions.
SELECT relation, current_user_name, match, server_name, query_text
FROM pii_audit.subject_access('13900000007') ORDER BY event_id;
SELECT count(*) AS possible FROM pii_audit.subject_access('13900000039') WHERE match <> 'recorded';
SELECT identifier, relations, reads, categories, server_names
FROM pii_audit.breach_scope(current_user, now() - interval '1 hour', now() + interval '1 hour')
WHERE identifier IN ('5', '13900000007') ORDER BY identifier;

-- Bad arguments.
SELECT * FROM pii_audit.subject_access(NULL);
SELECT * FROM pii_audit.subject_access('5', '2026-03-02', '2026-03-01');
SELECT * FROM pii_audit.breach_scope('no_such_person', now() - interval '1 day', now());
SELECT * FROM pii_audit.breach_scope(current_user, NULL, now());
SELECT * FROM pii_audit.breach_scope(current_user, '2026-06-30', '2026-03-01');
SET pii_audit.max_subjects_per_event = -1;
SET pii_audit.max_subjects_per_event = 1000000;

-- Only officers may ask.
CREATE ROLE subject_snoop LOGIN;
SET ROLE subject_snoop;
SELECT * FROM pii_audit.subject_access('5');
SELECT * FROM pii_audit.breach_scope('x', now() - interval '1 day', now());
SELECT pii_audit.subject_hash('5');
RESET ROLE;
GRANT USAGE ON SCHEMA public TO subject_snoop;
GRANT SELECT ON subscribers TO subject_snoop;
SET ROLE subject_snoop;
SELECT * FROM pii_audit.subject_access('5');
SELECT * FROM pii_audit.events LIMIT 1;
RESET ROLE;
GRANT pii_audit_officer TO subject_snoop;
SET ROLE subject_snoop;
SELECT relation, match FROM pii_audit.subject_access('5') WHERE match = 'recorded' ORDER BY event_id;
SELECT count(*) FROM pii_audit.breach_scope('postgres', now() - interval '1 hour', now() + interval '1 hour') WHERE identifier IS NOT NULL;
SELECT * FROM pii_audit.events LIMIT 1;
RESET ROLE;
REVOKE ALL ON subscribers FROM subject_snoop;
REVOKE ALL ON SCHEMA public FROM subject_snoop;
DROP ROLE subject_snoop;
