-- Who may read the trail and who may change it.
CREATE ROLE officer LOGIN IN ROLE pii_audit_officer;
CREATE ROLE nosy LOGIN;

SET ROLE nosy;
SELECT count(*) FROM pii_audit.access_log;
SELECT count(*) FROM pii_audit.events;
SELECT * FROM pii_audit.status;
SELECT count(*) FROM pii_audit.labelled_columns;
SELECT * FROM pii_audit._status();
RESET ROLE;

SET ROLE officer;
SELECT count(*) > 0 AS sees_trail FROM pii_audit.access_log;
SELECT count(*) > 0 AS sees_labels FROM pii_audit.labelled_columns;
SELECT state FROM pii_audit.status;
SELECT count(*) > 0 AS sees_label_changes FROM pii_audit.label_changes;
SELECT count(*) FROM pii_audit.events;
UPDATE pii_audit.events SET end_user = 'nobody';
UPDATE pii_audit.trail_sessions SET end_user = 'nobody';
SELECT count(*) FROM pii_audit.trail_groups;
DELETE FROM pii_audit.access_log;
INSERT INTO pii_audit.categories (name, description) VALUES ('officer_made', 'refused');
SELECT name FROM customers WHERE id = 1;
-- The extension's internals are not theirs: fetching groups past the views, merging or
-- deleting the subject index.
SELECT count(*) FROM pii_audit._trail_group(1, '-infinity', 'infinity');
SELECT pii_audit._allow_index_upkeep();
SELECT pii_audit.compact_subject_index();
RESET ROLE;
CREATE ROLE trail_admin LOGIN IN ROLE pii_audit_admin;
SET ROLE trail_admin;
SELECT pii_audit.compact_subject_index(16, 2, 0) AS admin_may_merge;
RESET ROLE;
DROP ROLE trail_admin;

-- Not even the owner (a superuser here) can rewrite history through normal commands.
-- pii_audit.events is a view over three tables; each of them refuses.
UPDATE pii_audit.events SET end_user = 'nobody' WHERE event_id = 1;
UPDATE pii_audit.trail_groups SET kind = 'read' WHERE first_event_id = 1;
DELETE FROM pii_audit.trail_groups WHERE first_event_id = 1;
TRUNCATE pii_audit.trail_groups;
UPDATE pii_audit.trail_sessions SET end_user = 'nobody';
DELETE FROM pii_audit.trail_sessions;
TRUNCATE pii_audit.trail_sessions;
UPDATE pii_audit.trail_statements SET query_text = 'SELECT 1';
DELETE FROM pii_audit.trail_statements;
TRUNCATE pii_audit.trail_statements;
-- ... and each month's partition of trail_groups, and the subject index, refuse too.
DO $$
DECLARE
    day_partition regclass := (SELECT inhrelid::regclass FROM pg_inherits
                               WHERE inhparent = 'pii_audit.trail_groups'::regclass LIMIT 1);
    statement text;
BEGIN
    FOREACH statement IN ARRAY ARRAY['TRUNCATE %s', 'DELETE FROM %s', 'UPDATE %s SET kind = $k$read$k$']
    LOOP
        BEGIN
            EXECUTE format(statement, day_partition);
            RAISE NOTICE 'a partition allowed %', split_part(statement, ' ', 1);
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE NOTICE 'partition: %', regexp_replace(SQLERRM, 'p[0-9]{6}', 'pYYYYMM');
        END;
    END LOOP;
END
$$;
TRUNCATE pii_audit.trail_subject_index;
TRUNCATE pii_audit.trail_subject_slices;
SET session_replication_role = replica;
DELETE FROM pii_audit.trail_groups WHERE first_event_id = 1;
UPDATE pii_audit.trail_sessions SET end_user = 'nobody';
RESET session_replication_role;
SELECT min(event_id) AS first_event FROM pii_audit.events;
