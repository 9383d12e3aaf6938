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
SELECT count(*) FROM pii_audit.trail;
DELETE FROM pii_audit.access_log;
INSERT INTO pii_audit.categories (name, description) VALUES ('officer_made', 'refused');
SELECT name FROM customers WHERE id = 1;
RESET ROLE;

-- Not even the owner (a superuser here) can rewrite history through normal commands.
-- pii_audit.events is a view over three tables; each of them refuses.
UPDATE pii_audit.events SET end_user = 'nobody' WHERE event_id = 1;
UPDATE pii_audit.trail SET status = 'completed' WHERE event_id = 1;
DELETE FROM pii_audit.trail WHERE event_id = 1;
TRUNCATE pii_audit.trail;
UPDATE pii_audit.trail_sessions SET end_user = 'nobody';
DELETE FROM pii_audit.trail_sessions;
TRUNCATE pii_audit.trail_sessions;
UPDATE pii_audit.trail_statements SET query_text = 'SELECT 1';
DELETE FROM pii_audit.trail_statements;
TRUNCATE pii_audit.trail_statements;
SET session_replication_role = replica;
DELETE FROM pii_audit.trail WHERE event_id = 1;
UPDATE pii_audit.trail_sessions SET end_user = 'nobody';
RESET session_replication_role;
SELECT min(event_id) AS first_event FROM pii_audit.events;
