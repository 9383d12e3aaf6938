-- The grouped trail (pii_audit.trail_groups): groups, their ids, the implied filters on the
-- views, the subject index, damage.
CREATE TABLE layout_people (id integer PRIMARY KEY, name text);
INSERT INTO layout_people SELECT g, 'person ' || g FROM generate_series(1, 30) g;
SECURITY LABEL FOR pii ON COLUMN layout_people.id IS 'subject_key';
SECURITY LABEL FOR pii ON COLUMN layout_people.name IS 'name';
SELECT advance_seen() AS since \gset
-- One session, two statements interleaved: one group per statement in each batch the worker
-- took them in (two groups when one batch took all five; the worker's flush may fall between
-- them); ids have no gaps, time order is kept.
SELECT name FROM layout_people WHERE id = 1;
SELECT name FROM layout_people WHERE id > 28;
SELECT name FROM layout_people WHERE id = 2;
SELECT name FROM layout_people WHERE id > 27;
SELECT name FROM layout_people WHERE id = 3;
SELECT wait_for_trail();
SELECT count(*) AS events,
       count(DISTINCT first_event_id) = count(DISTINCT (g.recorded_at, g.statement_id))
           AS one_group_per_statement_and_batch
FROM pii_audit.trail_groups g, pii_audit._group_events(g.first_event_id, g.min_time, g.payload) e
WHERE g.first_event_id > :since AND g.kind = 'read' AND g.statement_id IN
      (SELECT statement_id FROM pii_audit.trail_statements WHERE relation = 'public.layout_people');
SELECT query_text, row_count, subject_count FROM pii_audit.access_log
WHERE event_id > :since AND relation = 'public.layout_people' ORDER BY event_time;
SELECT max(event_id) - min(event_id) + 1 = count(*) AS gapless FROM pii_audit.events;

-- Filters on event_time and event_id imply filters on the groups. They must never change a
-- result: each filter below gives the same count as the same filter on an expression of the
-- column (which implies nothing), at every boundary.
CREATE TEMP TABLE boundaries AS
SELECT event_id, event_time FROM pii_audit.events WHERE event_id > :since;
DO $$
DECLARE
    b record;
    op text;
    direct bigint;
    opaque bigint;
    mismatches int := 0;
    checks int := 0;
BEGIN
    FOR b IN SELECT * FROM boundaries LOOP
        FOREACH op IN ARRAY ARRAY['<', '<=', '=', '>=', '>'] LOOP
            EXECUTE format('SELECT count(*) FROM pii_audit.events WHERE event_time %s %L', op, b.event_time) INTO direct;
            EXECUTE format('SELECT count(*) FROM pii_audit.events WHERE event_time + interval ''0'' %s %L', op, b.event_time) INTO opaque;
            mismatches := mismatches + (direct <> opaque)::int;
            EXECUTE format('SELECT count(*) FROM pii_audit.access_log WHERE %L %s event_time', b.event_time, op) INTO direct;
            EXECUTE format('SELECT count(*) FROM pii_audit.access_log WHERE %L %s event_time + interval ''0''', b.event_time, op) INTO opaque;
            mismatches := mismatches + (direct <> opaque)::int;
            EXECUTE format('SELECT count(*) FROM pii_audit.events WHERE event_id %s %s', op, b.event_id::integer) INTO direct;
            EXECUTE format('SELECT count(*) FROM pii_audit.events WHERE event_id + 0 %s %s', op, b.event_id) INTO opaque;
            mismatches := mismatches + (direct <> opaque)::int;
            checks := checks + 3;
        END LOOP;
    END LOOP;
    RAISE NOTICE 'implied filters: % mismatches in % checks', mismatches, checks > 0;
END
$$;
-- A prepared statement's parameters and now() - interval are expressions the filters take.
PREPARE recent(timestamptz, bigint) AS
SELECT count(*) FROM pii_audit.events WHERE event_time >= $1 AND event_id > $2;
EXECUTE recent(now() - interval '1 hour', :since);
SELECT count(*) FROM pii_audit.events WHERE event_time + interval '0' >= now() - interval '1 hour'
                                        AND event_id + 0 > :since;
-- The implied filters are in the plan (they use the groups' indexes).
CREATE FUNCTION plan_mentions(query text, needle text, options text DEFAULT 'COSTS OFF')
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    line text;
BEGIN
    FOR line IN EXECUTE 'EXPLAIN (' || options || ') ' || query LOOP
        IF position(needle IN line) > 0 THEN
            RETURN true;
        END IF;
    END LOOP;
    RETURN false;
END
$$;
SELECT plan_mentions('SELECT * FROM pii_audit.access_log WHERE event_time >= now() - interval ''5 minutes''', 'max_time >=') AS time_lower,
       plan_mentions('SELECT * FROM pii_audit.access_log WHERE event_time >= now() - interval ''5 minutes''', 'min_time >=') AS time_lower_min,
       plan_mentions('SELECT * FROM pii_audit.access_log WHERE event_time >= now() - interval ''5 minutes''', 'max_time - min_time') AS time_lower_long,
       plan_mentions('SELECT * FROM pii_audit.login_log WHERE event_time < now() - interval ''5 minutes''', 'min_time <') AS time_upper,
       plan_mentions('SELECT * FROM pii_audit.events WHERE event_id > 12345', 'first_event_id >=') AS id_lower,
       plan_mentions('SELECT * FROM pii_audit.label_changes WHERE event_id <= 12345', 'first_event_id <=') AS id_upper,
       plan_mentions('SELECT * FROM pii_audit.events WHERE event_id > 1 OR event_time > now()', 'first_event_id') AS not_for_or;

-- A range of fixed times (constants, plus or minus hours, minutes and seconds) plans only the
-- months it can reach: the others are not even opened. A bound the planner cannot work out (a
-- day's length depends on the time zone) plans the months it may reach and leaves them out when
-- the plan starts (Subplans Removed).
BEGIN;
SELECT count(pii_audit._month_partition(d)) AS months_made
FROM (VALUES (date '2024-01-15'), ('2024-02-15'), ('2024-03-15')) v(d);
SELECT name, plan_mentions(query, 'trail_groups_p202401') AS january,
       plan_mentions(query, 'trail_groups_p202402') AS february,
       plan_mentions(query, 'trail_groups_p202403') AS march,
       plan_mentions(query, 'Subplans Removed') AS left_out_at_start
FROM (VALUES
    ('five minutes', $q$SELECT * FROM pii_audit.access_log WHERE event_time >= '2024-02-10 00:00+00' AND event_time < '2024-02-10 00:00+00'::timestamptz + interval '5 minutes'$q$),
    ('near a month''s start', $q$SELECT * FROM pii_audit.access_log WHERE event_time >= '2024-02-01 00:30+00' AND event_time < '2024-02-01 00:30+00'::timestamptz + interval '5 minutes'$q$),
    ('hours back and forth', $q$SELECT * FROM pii_audit.events WHERE event_time > '2024-02-10 00:00+00'::timestamptz - interval '2 hours' + interval '1 hour' AND event_time <= '2024-02-10 00:00+00'$q$),
    ('a day back', $q$SELECT * FROM pii_audit.access_log WHERE event_time >= '2024-02-10 00:00+00'::timestamptz - interval '1 day' AND event_time < '2024-02-10 00:00+00'$q$)
) v(name, query);
-- A bound from the clock stays as it is (worked out when the plan runs), and a constant a day
-- and an hour earlier leaves the months before out of the plan: none of 2024's three is planned
-- (a month that ended within the last day may be, and then left out at the start).
CREATE FUNCTION pg_temp.left_out_at_start(query text) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    line text;
    n integer := 0;
BEGIN
    FOR line IN EXECUTE 'EXPLAIN (COSTS OFF) ' || query LOOP
        n := n + coalesce(substring(line FROM 'Subplans Removed: (\d+)')::integer, 0);
    END LOOP;
    RETURN n;
END
$$;
SELECT pg_temp.left_out_at_start('SELECT * FROM pii_audit.access_log WHERE event_time >= now() - interval ''5 minutes''') < 3 AS clock_2024_not_planned,
       pg_temp.left_out_at_start('SELECT * FROM pii_audit.events WHERE event_time > CURRENT_TIMESTAMP(0) - interval ''1 hour''') < 3 AS current_timestamp_2024_not_planned,
       plan_mentions('SELECT * FROM pii_audit.access_log WHERE event_time >= now() - interval ''5 minutes''', 'max_time - min_time') AS clock_long_span_arm;
ROLLBACK;

-- Queries over the trail are planned without parallel workers or JIT, whatever the settings
-- say; other queries keep them, and the settings are as they were.
-- (EXPLAIN shows JIT only with costs, and only what ran: ANALYZE.)
CREATE FUNCTION jit_used(query text) RETURNS boolean LANGUAGE sql AS $$
    SELECT plan_mentions(query, 'JIT:', 'ANALYZE, TIMING OFF, SUMMARY OFF')
$$;
CREATE TABLE unlabelled_rows AS SELECT g AS id FROM generate_series(1, 100) g;
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SET max_parallel_workers_per_gather = 2;
SET jit = on;
SET jit_above_cost = 0;
SELECT plan_mentions('SELECT * FROM pii_audit.access_log WHERE event_time >= now() - interval ''5 minutes''', 'Gather') AS trail_parallel,
       jit_used('SELECT * FROM pii_audit.access_log WHERE event_time >= now() - interval ''5 minutes''') AS trail_jit,
       plan_mentions('WITH e AS (SELECT * FROM pii_audit.events) SELECT count(*) FROM e', 'Gather') AS cte_parallel,
       plan_mentions('SELECT * FROM layout_people WHERE id IN (SELECT event_id FROM pii_audit.events)', 'Gather') AS sublink_parallel,
       plan_mentions('SELECT * FROM unlabelled_rows WHERE id <> 7', 'Gather') AS other_parallel,
       jit_used('SELECT * FROM unlabelled_rows WHERE id <> 7') AS other_jit;
SHOW max_parallel_workers_per_gather;
SHOW jit;
RESET parallel_setup_cost;
RESET parallel_tuple_cost;
RESET min_parallel_table_scan_size;
RESET max_parallel_workers_per_gather;
RESET jit;
RESET jit_above_cost;
DROP TABLE unlabelled_rows;

-- events_after: in id order, from the oldest when asked for 0, bad arguments refused.
SELECT count(*) = 5 AND min(event_id) = 1 AND max(event_id) = 5 AS from_the_start
FROM pii_audit.events_after(0, 5);
SELECT array_agg(event_id ORDER BY event_id) = array_agg(event_id) AS in_order
FROM pii_audit.events_after(:since, 100);
SELECT count(*) FROM pii_audit.events_after(-5, 1);
-- After the largest id there is nothing (and no overflow); a window that starts inside the
-- trail gives exactly its ids.
SELECT count(*) FROM pii_audit.events_after(9223372036854775807, 1000000);
SELECT count(*) FROM pii_audit.export(9223372036854775807, 10);
SELECT count(*) = 2 AND min(event_id) = 3 AND max(event_id) = 4 AS window_of_two
FROM pii_audit.events_after(2, 2);
-- Its rows are the events view's rows, column for column.
SELECT count(*) AS differing FROM (
    (SELECT * FROM pii_audit.events_after(0, 1000000) EXCEPT ALL SELECT * FROM pii_audit.events)
    UNION ALL
    (SELECT * FROM pii_audit.events EXCEPT ALL SELECT * FROM pii_audit.events_after(0, 1000000))) d;
SELECT * FROM pii_audit.events_after(0, 0);
SELECT * FROM pii_audit.events_after(NULL, 10);

-- The subject index: with slices of 100 entries, reads land in slices and after them; the
-- person is found either way, and only where read.
ALTER SYSTEM SET pii_audit.subject_index_slice = 100;
SELECT pg_reload_conf();
SELECT pg_sleep(0.3);
SELECT name FROM layout_people WHERE id > 0;
SELECT name FROM layout_people WHERE id > 0;
SELECT name FROM layout_people WHERE id > 0;
SELECT name FROM layout_people WHERE id > 0;
SELECT name FROM layout_people WHERE id = 17;
SELECT wait_for_trail();
SELECT count(*) > 0 AS slices_written FROM pii_audit.trail_subject_slices;
SELECT count(*) AS reads_of_17, count(*) FILTER (WHERE match = 'recorded') AS recorded
FROM pii_audit.subject_access('17') WHERE event_id > :since;
SELECT count(*) AS reads_of_1 FROM pii_audit.subject_access('1') WHERE event_id > :since;
SELECT count(*) FILTER (WHERE match = 'recorded') AS recorded_reads_of_nobody
FROM pii_audit.subject_access('no such person');

-- Merging slices (the maintenance process merges 16 at a time, twice over; here 2 at a time):
-- every read is still found, with the same match, and the index stays append-only otherwise.
-- (A slice is cut at the end of a batch: one batch per read.)
CREATE PROCEDURE layout_read_in_batches(n integer) LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1..n LOOP
        PERFORM count(name) FROM layout_people WHERE id > 0;
        COMMIT;
        PERFORM wait_for_trail();
    END LOOP;
END
$$;
CALL layout_read_in_batches(24);
CREATE TEMP TABLE reads_before AS
SELECT p.id, a.event_id, a.match FROM layout_people p
CROSS JOIN LATERAL pii_audit.subject_access(p.id::text) a WHERE a.event_id > :since;
SELECT count(*) >= 30 * 24 AS many_reads FROM reads_before;
SELECT pii_audit.compact_subject_index(2) > 0 AS merged;
SELECT count(*) FILTER (WHERE level > 0) > 0 AS merged_slices, max(level) <= 2 AS levels_bounded
FROM pii_audit.trail_subject_slices;
SELECT pii_audit.compact_subject_index(2) AS merges_when_done;
SELECT count(*) AS reads_changed FROM (
    (SELECT * FROM reads_before
     EXCEPT ALL
     SELECT p.id, a.event_id, a.match FROM layout_people p
     CROSS JOIN LATERAL pii_audit.subject_access(p.id::text) a WHERE a.event_id > :since)
    UNION ALL
    (SELECT p.id, a.event_id, a.match FROM layout_people p
     CROSS JOIN LATERAL pii_audit.subject_access(p.id::text) a WHERE a.event_id > :since
     EXCEPT ALL
     SELECT * FROM reads_before)) d;
DELETE FROM pii_audit.trail_subject_index WHERE slice = (SELECT min(slice) FROM pii_audit.trail_subject_index);
DELETE FROM pii_audit.trail_subject_slices WHERE first_event_id = (SELECT min(first_event_id) FROM pii_audit.trail_subject_slices);
SELECT pii_audit.compact_subject_index(1);
SELECT pii_audit.compact_subject_index(16, 0);
SELECT pii_audit.compact_subject_index(NULL);
SELECT pii_audit.compact_subject_index(16, 2, -1);
SELECT pii_audit._merge_subject_slices(ARRAY[-2, -1]::bigint[]);
-- Slices of different bucket widths merge into the narrower width: a row of the wider slice
-- goes to the bucket its top bits name. (Made-up slices far past the trail, rolled back.)
BEGIN;
INSERT INTO pii_audit.trail_subject_slices
    (first_event_id, last_event_id, min_time, max_time, bucket_bits, entries, level)
VALUES (1000000000000, 1000000000099, now(), now(), 2, 1, 0),
       (1000000000100, 1000000000199, now(), now(), 1, 1, 0);
-- The hash 0x4000000000000005: bucket 1 of 2 bits, bucket 0 of 1 bit; low bits 5.
INSERT INTO pii_audit.trail_subject_index VALUES
    (1000000000000, 1, '\x0500000003000000'), (1000000000100, 0, '\x0500000007000000');
SELECT pii_audit._merge_subject_slices(ARRAY[1000000000000, 1000000000100]::bigint[]);
SELECT first_event_id, last_event_id, bucket_bits, entries, level FROM pii_audit.trail_subject_slices
WHERE first_event_id >= 1000000000000;
SELECT slice, bucket, encode(entries, 'hex') FROM pii_audit.trail_subject_index
WHERE slice >= 1000000000000;
SELECT first_event_id FROM pii_audit._subject_groups(x'4000000000000005'::bigint)
WHERE first_event_id >= 1000000000000 ORDER BY 1;
ROLLBACK;
SELECT pii_audit._merge_subject_entries(ARRAY['\x0100000002000000'::bytea], ARRAY[1, 2]::bigint[]);
SELECT pii_audit._merge_subject_entries(ARRAY['\x01000000'::bytea], ARRAY[0]::bigint[]);
SELECT pii_audit._merge_subject_entries(ARRAY[NULL::bytea], ARRAY[0]::bigint[]);
SELECT pii_audit._merge_subject_entries(ARRAY['\x0100000002000000'::bytea, '\x0100000002000000'::bytea], ARRAY[0, 4294967295]::bigint[]);
SELECT encode(pii_audit._merge_subject_entries(ARRAY['\x0100000002000000'::bytea, '\x0100000001000000'::bytea], ARRAY[0, 1]::bigint[]), 'hex') AS merged_row;
ALTER SYSTEM RESET pii_audit.subject_index_slice;
SELECT pg_reload_conf();

-- A damaged group is reported, never read past. (A superuser can disable the trail's triggers;
-- this test does, inside a transaction it rolls back.)
BEGIN;
ALTER TABLE pii_audit.trail_groups DISABLE TRIGGER trail_append_only;
UPDATE pii_audit.trail_groups SET payload = substr(payload, 1, length(payload) - 1)
WHERE first_event_id = (SELECT max(first_event_id) FROM pii_audit.trail_groups WHERE kind = 'read');
-- (The error names the group by its first event id, which depends on the tests before.)
DO $$
DECLARE
    damaged bigint := (SELECT max(first_event_id) FROM pii_audit.trail_groups WHERE kind = 'read');
    message text;
    hint text;
BEGIN
    PERFORM count(*) FROM pii_audit.events;
    RAISE NOTICE 'the damage was not reported';
EXCEPTION WHEN data_corrupted THEN
    GET STACKED DIAGNOSTICS message = MESSAGE_TEXT, hint = PG_EXCEPTION_HINT;
    RAISE NOTICE '% HINT: %', replace(message, 'event ' || damaged || ' ', 'event <first of the group> '), hint;
END
$$;
ROLLBACK;
SELECT pii_audit._group_has_subject(now(), '\x01'::bytea, 1) AS damaged_may_hold_anyone;
DROP TABLE layout_people;

-- ANALYZE keeps statistics of the trail's columns, but none of the groups' payloads or the
-- subject index's entries (no query filters on them; a new session's first plan read them), in
-- every month, the months made since the extension was created included.
ANALYZE pii_audit.trail_groups;
ANALYZE pii_audit.trail_subject_index;
SELECT count(*) FILTER (WHERE a.attname IN ('payload', 'entries')) AS payload_statistics,
       count(*) FILTER (WHERE a.attname = 'min_time') > 0 AS min_time_statistics
FROM pg_statistic s
JOIN pg_attribute a ON a.attrelid = s.starelid AND a.attnum = s.staattnum
JOIN pg_class c ON c.oid = s.starelid
WHERE c.relnamespace = 'pii_audit'::regnamespace;
SELECT count(*) AS months, count(*) FILTER (WHERE a.attstattarget = 0) AS months_without
FROM pg_inherits i
JOIN pg_attribute a ON a.attrelid = i.inhrelid AND a.attname = 'payload'
WHERE i.inhparent = 'pii_audit.trail_groups'::regclass;
