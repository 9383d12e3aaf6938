-- Every setting refuses bad values with a message that says what is allowed; settings that
-- switch auditing off or move the trail are for superusers only.
SET pii_audit.on_queue_full = 'block';
SET pii_audit.queue_wait_timeout = -1;
SET pii_audit.queue_wait_timeout = '2 min';
SET pii_audit.max_query_length = 10;
SET pii_audit.queue_size = '64MB';
SET pii_audit.database = 'elsewhere';
SET pii_audit.flush_interval = 5;
SET pii_audit.end_user = E'clerk\n0421';
SET pii_audit.end_user = 'clerk-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa';
SET pii_audit.nonexistent = 1;
SHOW pii_audit.end_user;

CREATE ROLE plain_user LOGIN;
GRANT SELECT ON customers TO plain_user;
SET ROLE plain_user;
SET pii_audit.enabled = off;
SET pii_audit.on_queue_full = 'drop';
SET pii_audit.fail_on_error = on;
SET pii_audit.end_user = 'clerk-0099';
SELECT name FROM customers WHERE id = 31;
RESET ROLE;

-- A superuser may switch auditing off for a session: nothing is recorded then.
SET pii_audit.enabled = off;
SELECT name FROM customers WHERE id = 32;
RESET pii_audit.enabled;
SELECT name FROM customers WHERE id = 33;

-- Long statements are cut at max_query_length, and say so.
SET pii_audit.max_query_length = 64;
SELECT name FROM customers WHERE id = 34 AND name <> 'a very long literal that will not be stored' AND id > 0;
RESET pii_audit.max_query_length;

SELECT end_user, relation, columns, query_text FROM new_events();
SELECT query_truncated FROM pii_audit.access_log ORDER BY event_id DESC LIMIT 1;
SELECT state, audit_database, enabled FROM pii_audit.status;
