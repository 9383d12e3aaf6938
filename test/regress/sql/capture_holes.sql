-- Reads that were recorded wrongly or not at all. Each case failed before its fix.
CREATE TABLE holes (id int PRIMARY KEY, phone text, note text);
INSERT INTO holes SELECT g, '1390000' || lpad(g::text, 4, '0'), 'n' || g FROM generate_series(1, 20) g;
SECURITY LABEL FOR pii ON COLUMN holes.phone IS 'phone';
CREATE TABLE hole_lookup (k int);
INSERT INTO hole_lookup VALUES (3);
-- A STABLE function the planner runs while estimating a condition (its own query is a
-- statement of its own; it must not take the place of the utility's query).
CREATE FUNCTION hole_pick() RETURNS int LANGUAGE sql STABLE AS 'SELECT k FROM hole_lookup';
SELECT count(*) > 0 AS labelled FROM new_events();

-- COPY (query) TO, DECLARE CURSOR and CREATE TABLE AS are recorded as themselves.
COPY (SELECT phone FROM holes WHERE id < hole_pick()) TO stdout;
BEGIN;
DECLARE hole_cursor CURSOR FOR SELECT phone FROM holes WHERE id < hole_pick();
FETCH 1 FROM hole_cursor;
CLOSE hole_cursor;
COMMIT;
CREATE TABLE hole_copy AS SELECT phone FROM holes WHERE id < hole_pick();
-- Plain EXPLAIN reads nothing of holes.
EXPLAIN (COSTS OFF) SELECT phone FROM holes WHERE id < hole_pick();
SELECT kind, command, relation, columns, row_count, status FROM new_events();

-- Cursors count the rows they send: not the rows a MOVE or FETCH ABSOLUTE skips, not the rows
-- a WITH HOLD cursor runs again at commit.
BEGIN;
DECLARE hole_scroll SCROLL CURSOR FOR SELECT phone FROM holes ORDER BY id;
MOVE 10 IN hole_scroll;
FETCH 2 FROM hole_scroll;
FETCH ABSOLUTE 15 FROM hole_scroll;
CLOSE hole_scroll;
COMMIT;
BEGIN;
DECLARE hole_hold CURSOR WITH HOLD FOR SELECT phone FROM holes ORDER BY id;
FETCH 3 FROM hole_hold;
COMMIT;
FETCH 2 FROM hole_hold;
CLOSE hole_hold;
SELECT kind, command, relation, columns, row_count, status FROM new_events();

-- Foreign-key checks and REFRESH ... CONCURRENTLY's merge are PostgreSQL's own queries: the
-- user's statement is recorded, once.
ALTER TABLE holes ADD CONSTRAINT holes_phone_key UNIQUE (phone);
CREATE TABLE hole_orders (id serial, phone text REFERENCES holes (phone));
SECURITY LABEL FOR pii ON COLUMN hole_orders.phone IS 'phone';
SELECT count(*) FROM new_events();
INSERT INTO hole_orders (phone) SELECT phone FROM holes WHERE id <= 10;
SELECT kind, command, relation, columns, row_count, status FROM new_events();
CREATE MATERIALIZED VIEW hole_mv AS SELECT id, phone FROM holes;
CREATE UNIQUE INDEX ON hole_mv (id);
SECURITY LABEL FOR pii ON COLUMN hole_mv.phone IS 'phone';
SELECT count(*) FROM new_events();
REFRESH MATERIALIZED VIEW CONCURRENTLY hole_mv;
SELECT kind, command, relation, columns, row_count, status FROM new_events();

-- Statements run by DO are nested in it.
DO $$ BEGIN PERFORM phone FROM holes WHERE id = 1; END $$;
SELECT wait_for_trail();
SELECT e.command, e.relation, e.nesting_level FROM pii_audit.access_log e
WHERE e.event_id > (SELECT last_event_id FROM seen) AND e.kind = 'read' ORDER BY e.event_id;
SELECT count(*) FROM new_events();

-- A subject is identified as its key type compares: char(n) without its padding, numeric
-- without trailing fractional zeros. subject_access finds the person by the plain identifier.
CREATE TABLE hole_char (code char(8), amount numeric(10,2), note text);
INSERT INTO hole_char VALUES ('AB12', 5.00, 'x'), ('CD34', 7.50, 'y');
SECURITY LABEL FOR pii ON COLUMN hole_char.code IS 'id_number, subject_key';
CREATE TABLE hole_num (account numeric(12,2), note text);
INSERT INTO hole_num VALUES (1001.00, 'x'), (1002.50, 'y');
SECURITY LABEL FOR pii ON COLUMN hole_num.account IS 'bank_account, subject_key';
SELECT code FROM hole_char WHERE note = 'x';
SELECT account FROM hole_num;
SELECT wait_for_trail();
SELECT relation, count(*) FROM pii_audit.subject_access('AB12') WHERE match = 'recorded' GROUP BY relation;
SELECT relation, count(*) FROM pii_audit.subject_access('1001') WHERE match = 'recorded' GROUP BY relation;
SELECT relation, count(*) FROM pii_audit.subject_access('1002.5') WHERE match = 'recorded' GROUP BY relation;
SELECT identifier FROM pii_audit.breach_scope(current_user, now() - interval '1 hour', now())
WHERE identifier IN ('AB12', '1001', '1002.5') ORDER BY 1;
DROP TABLE hole_char, hole_num;
SELECT count(*) >= 0 FROM new_events();

-- Keyed tables reached where no scan returns their rows: the subject count is a lower bound
-- (estimated, truncated), never an exact 0. A foreign table's scan is tapped like a table's.
CREATE TABLE hole_keyed (id int PRIMARY KEY, phone text);
SECURITY LABEL FOR pii ON COLUMN hole_keyed.id IS 'subject_key';
SECURITY LABEL FOR pii ON COLUMN hole_keyed.phone IS 'phone';
CREATE EXTENSION file_fdw;
CREATE SERVER hole_files FOREIGN DATA WRAPPER file_fdw;
DO $$
BEGIN
    EXECUTE format('COPY (SELECT g, %L || g FROM generate_series(1, 5) g) TO %L (FORMAT csv)',
                   '139000000', '/tmp/pii_audit_regress_' || current_database() || '.csv');
    EXECUTE format('CREATE FOREIGN TABLE hole_foreign (id int, phone text) SERVER hole_files '
                   'OPTIONS (filename %L, format %L)',
                   '/tmp/pii_audit_regress_' || current_database() || '.csv', 'csv');
END
$$;
SECURITY LABEL FOR pii ON COLUMN hole_foreign.id IS 'subject_key';
SECURITY LABEL FOR pii ON COLUMN hole_foreign.phone IS 'phone';
SELECT count(*) > 0 AS labelled FROM new_events();
INSERT INTO hole_keyed VALUES (1, '13900000001') RETURNING phone;
INSERT INTO hole_keyed VALUES (1, '13900000009')
ON CONFLICT (id) DO UPDATE SET phone = hole_keyed.phone || '+' RETURNING id;
SELECT phone FROM hole_foreign WHERE id IN (2, 4) ORDER BY 1;
SELECT wait_for_trail();
SELECT e.command, e.relation, e.row_count, e.subject_count, e.subject_count_estimated,
       e.subjects_truncated
FROM pii_audit.access_log e
WHERE e.event_id > (SELECT last_event_id FROM seen) AND e.kind = 'read' ORDER BY e.event_id;
SELECT count(*) >= 0 FROM new_events();
DROP FOREIGN TABLE hole_foreign;
DROP SERVER hole_files;
DROP EXTENSION file_fdw;
DROP TABLE hole_keyed;

-- A row-level security policy's condition on a labelled column is a read of that column:
-- count(*) through it tells how many rows each phone has.
CREATE TABLE hole_devices (serial text, owner_phone text);
INSERT INTO hole_devices VALUES ('S1', '13800000001'), ('S2', '13800000001'), ('S3', '13800000002');
SECURITY LABEL FOR pii ON COLUMN hole_devices.owner_phone IS 'phone';
ALTER TABLE hole_devices ENABLE ROW LEVEL SECURITY;
CREATE POLICY hole_own ON hole_devices USING (owner_phone = current_setting('app.phone'));
CREATE ROLE regress_pii_device_user;
GRANT SELECT (serial) ON hole_devices TO regress_pii_device_user;
SELECT count(*) > 0 AS labelled FROM new_events();
SET ROLE regress_pii_device_user;
SET app.phone = '13800000001';
SELECT count(*) FROM hole_devices;
SELECT serial FROM hole_devices ORDER BY 1;
RESET ROLE;
SELECT kind, command, relation, columns, row_count, status FROM new_events();
DROP TABLE hole_devices;
DROP ROLE regress_pii_device_user;

-- An error whose message shows labelled values is a read of them (status failed): the
-- failing row of a CHECK violation, the key of a unique or foreign-key violation.
CREATE TABLE hole_devices2 (serial text PRIMARY KEY, owner_phone text UNIQUE,
                            CHECK (serial <> owner_phone));
SECURITY LABEL FOR pii ON COLUMN hole_devices2.owner_phone IS 'phone';
INSERT INTO hole_devices2 VALUES ('S1', '13800000001');
CREATE TABLE hole_owner_ref (phone text REFERENCES hole_devices2 (owner_phone));
SECURITY LABEL FOR pii ON COLUMN hole_owner_ref.phone IS 'phone';
SELECT count(*) > 0 AS labelled FROM new_events();
\set VERBOSITY default
INSERT INTO hole_devices2 VALUES ('S2', '13800000001');
UPDATE hole_devices2 SET serial = '13800000001' WHERE serial = 'S1';
INSERT INTO hole_owner_ref VALUES ('13800000404');
SELECT kind, command, relation, columns, row_count, status FROM new_events();
-- A cursor left open by an earlier statement does not take the failed statement's read.
BEGIN;
DECLARE hole_open CURSOR FOR SELECT owner_phone FROM hole_devices2;
FETCH 1 FROM hole_open;
SAVEPOINT before_insert;
INSERT INTO hole_devices2 VALUES ('S3', '13800000001');
ROLLBACK TO before_insert;
CLOSE hole_open;
COMMIT;
SELECT kind, command, relation, columns, row_count, status FROM new_events();
DROP TABLE hole_owner_ref, hole_devices2;

-- Only the foreign-key query itself is internal: a trigger that a cascaded DELETE fires runs
-- under the same "no forced row security" state, and its reads are the user's.
CREATE TABLE hole_parent (id int PRIMARY KEY);
CREATE TABLE hole_child (parent int REFERENCES hole_parent ON DELETE CASCADE);
INSERT INTO hole_parent VALUES (1);
INSERT INTO hole_child VALUES (1);
CREATE TABLE hole_loot (phone text);
CREATE FUNCTION hole_child_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO hole_loot SELECT phone FROM holes WHERE id = 2;
    RETURN OLD;
END
$$;
CREATE TRIGGER hole_child_deleted BEFORE DELETE ON hole_child
    FOR EACH ROW EXECUTE FUNCTION hole_child_deleted();
SELECT count(*) >= 0 FROM new_events();
DELETE FROM hole_parent WHERE id = 1;
SELECT kind, command, relation, columns, row_count, status FROM new_events();
DROP TABLE hole_child, hole_parent, hole_loot;
DROP FUNCTION hole_child_deleted();

-- EXECUTE runs its prepared statement at its own level.
PREPARE hole_prepared AS SELECT phone FROM holes WHERE id = 3;
EXECUTE hole_prepared;
SELECT wait_for_trail();
SELECT e.command, e.nesting_level FROM pii_audit.access_log e
WHERE e.event_id > (SELECT last_event_id FROM seen) AND e.kind = 'read' ORDER BY e.event_id;
SELECT count(*) >= 0 FROM new_events();
DEALLOCATE hole_prepared;

DROP MATERIALIZED VIEW hole_mv;
DROP TABLE hole_orders, hole_copy, holes, hole_lookup;
DROP FUNCTION hole_pick();
