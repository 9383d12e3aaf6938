-- Capture through every other path that reads data.

-- SQL and PL/pgSQL functions, including dynamic EXECUTE: the statement inside is recorded.
CREATE FUNCTION phone_of(customer int) RETURNS text LANGUAGE sql STABLE
    AS $$ SELECT phone FROM customers WHERE id = customer $$;
CREATE FUNCTION code_of(customer_phone text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE result text;
BEGIN
    SELECT code INTO result FROM sms_codes WHERE phone = customer_phone;
    RETURN result;
END $$;
CREATE FUNCTION dynamic_name(customer int) RETURNS text LANGUAGE plpgsql AS $$
DECLARE result text;
BEGIN
    EXECUTE 'SELECT name FROM customers WHERE id = ' || customer INTO result;
    RETURN result;
END $$;
SELECT phone_of(13) IS NOT NULL AS found;
SELECT code_of('13800000001') IS NOT NULL AS found;
SELECT dynamic_name(14);

-- Prepared statements.
PREPARE lookup(int) AS SELECT name, phone FROM customers WHERE id = $1;
EXECUTE lookup(15);
EXECUTE lookup(16);
DEALLOCATE lookup;

-- Cursors: one event when the cursor closes, counting every row fetched.
BEGIN;
DECLARE c CURSOR FOR SELECT name FROM customers WHERE id <= 10 ORDER BY id;
FETCH 3 FROM c;
FETCH 2 FROM c;
CLOSE c;
COMMIT;

-- Writes that read: RETURNING, conditions, INSERT ... SELECT, CREATE TABLE AS.
UPDATE customers SET segment = 'vip' WHERE id = 17 RETURNING phone;
UPDATE customers SET segment = 'retail' WHERE phone = '13800000017';
UPDATE customers SET phone = phone WHERE id = 18;
DELETE FROM sms_codes WHERE id = 20 RETURNING code;
INSERT INTO sms_codes (phone, code) VALUES ('13800000020', '000000') RETURNING code;
CREATE TABLE phone_book (phone text);
INSERT INTO phone_book SELECT phone FROM customers WHERE id <= 5;
CREATE TABLE copied AS SELECT name FROM customers WHERE id <= 4;
SELECT * FROM phone_book WHERE false;  -- a copy of data is not labelled by itself

-- COPY: a table (how pg_dump reads) and a query.
COPY customers (id, phone) TO STDOUT;
COPY (SELECT id_number FROM customers WHERE id <= 2) TO STDOUT;
COPY customers (id, segment) TO STDOUT;

-- Partitions: a label on the parent covers the partitions, read either way.
CREATE TABLE calls (id int, caller text, region text) PARTITION BY LIST (region);
CREATE TABLE calls_north PARTITION OF calls FOR VALUES IN ('north');
CREATE TABLE calls_south PARTITION OF calls FOR VALUES IN ('south');
INSERT INTO calls VALUES (1, '13800000001', 'north'), (2, '13800000002', 'south');
SECURITY LABEL FOR pii ON COLUMN calls.caller IS 'phone';
SELECT caller FROM calls ORDER BY id;
SELECT caller FROM calls_south;
SELECT id FROM ONLY calls_north;
-- Inheritance children (matched by column name, whatever its position).
CREATE TABLE visits (visitor text, place text);
CREATE TABLE visits_2026 (extra int) INHERITS (visits);
SECURITY LABEL FOR pii ON COLUMN visits.place IS 'location';
INSERT INTO visits_2026 VALUES ('a', 'pier 4', 1);
SELECT place FROM visits;
SELECT place FROM visits_2026;

-- Parallel query: one event from the leader, the full row count.
CREATE TABLE big_people (id int, name text);
INSERT INTO big_people SELECT g, 'n' || g FROM generate_series(1, 100000) g;
SECURITY LABEL FOR pii ON COLUMN big_people.name IS 'name';
ANALYZE big_people;
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SELECT count(name) FROM big_people WHERE name LIKE 'n1%';
RESET parallel_setup_cost;
RESET parallel_tuple_cost;
RESET min_parallel_table_scan_size;

-- EXPLAIN ANALYZE runs the query; plain EXPLAIN does not read.
EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) SELECT name FROM customers WHERE id = 19;
EXPLAIN (COSTS OFF) SELECT name FROM customers WHERE id = 19;

-- A read in a transaction that rolls back is still a read; a failing statement is recorded
-- as failed, with the rows it had produced.
BEGIN;
SELECT phone FROM customers WHERE id = 21;
ROLLBACK;
SELECT phone, 1 / (id - 25) FROM customers WHERE id BETWEEN 22 AND 30;
DO $$
BEGIN
    PERFORM id_number FROM customers WHERE 1 / (id - 3) > 0;
EXCEPTION WHEN division_by_zero THEN NULL;
END $$;

SELECT kind, command, relation, columns, categories, row_count, status, query_text
FROM new_events();
