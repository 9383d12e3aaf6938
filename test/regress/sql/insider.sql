-- Insider detection, the SQL side: denied reads and logins in the trail, the alerts table's
-- review rules, departed accounts, peer groups, and the scoring settings.
SELECT advance_seen() >= 0 AS ready;

-- A read refused for lack of privileges is recorded as denied, with what it tried to read.
CREATE ROLE insider_denied LOGIN;
SET ROLE insider_denied;
SET pii_audit.end_user = 'clerk-denied';
SELECT phone FROM customers WHERE id = 1;
SELECT code FROM sms_codes WHERE phone = '13800000001';
RESET pii_audit.end_user;
RESET ROLE;
SELECT kind, command, relation, columns, categories, row_count, status, end_user, query_text
FROM new_events();
-- Only labelled reads count: a refused read of unlabelled columns is not personal data.
CREATE TABLE insider_plain (id int);
SET ROLE insider_denied;
SELECT id FROM insider_plain;
RESET ROLE;
SELECT count(*) FROM new_events();

-- Logins are in their own view (this session's own login happened before the test started).
SELECT status, user_name IS NOT NULL AS has_user FROM pii_audit.login_log LIMIT 0;
SELECT count(*) > 0 AS logins_recorded FROM pii_audit.login_log WHERE status = 'completed';
SELECT count(*) AS logins_in_access_log FROM pii_audit.access_log WHERE kind = 'login';

-- Alerts: officers read them and change status and note, nothing else; nobody deletes them.
INSERT INTO pii_audit.alerts (alert_time, actor, peer_group, detector, score, severity,
                              explanation, evidence)
VALUES ('2026-03-05 10:02:11+08', 'clerk-0421', 'counter_app', 'sensitive_categories', 88,
        'high', 'read verification_code of 14 subjects today', '{1,2,3}');
CREATE ROLE insider_officer LOGIN IN ROLE pii_audit_officer;
CREATE ROLE insider_admin LOGIN IN ROLE pii_audit_admin;
SET ROLE insider_officer;
SELECT actor, detector, score, severity, status, status_by, note FROM pii_audit.alerts
WHERE actor = 'clerk-0421';
UPDATE pii_audit.alerts SET status = 'acknowledged', note = 'asked the branch manager'
WHERE actor = 'clerk-0421';
SELECT status, status_by, status_at IS NOT NULL AS stamped, note FROM pii_audit.alerts
WHERE actor = 'clerk-0421';
UPDATE pii_audit.alerts SET score = 10 WHERE actor = 'clerk-0421';
\set VERBOSITY terse
UPDATE pii_audit.alerts SET status = 'dismissed' WHERE actor = 'clerk-0421';
\set VERBOSITY default
DELETE FROM pii_audit.alerts;
INSERT INTO pii_audit.alerts (alert_time, actor, peer_group, detector, score, severity,
                              explanation, evidence)
VALUES (now(), 'x', 'y', 'bulk_reading', 1, 'low', 'forged', '{}');
RESET ROLE;
-- Not even a superuser rewrites an alert or removes one.
UPDATE pii_audit.alerts SET explanation = 'nothing to see' WHERE actor = 'clerk-0421';
DELETE FROM pii_audit.alerts WHERE actor = 'clerk-0421';
TRUNCATE pii_audit.alerts;
SET ROLE insider_denied;
SELECT count(*) FROM pii_audit.alerts;
RESET ROLE;

-- Departed accounts: administrators mark and clear them; bad arguments are refused.
SET ROLE insider_admin;
SELECT pii_audit.mark_departed('clerk-0099', '2026-06-30 18:00+08');
SELECT pii_audit.mark_departed(NULL);
SELECT pii_audit.mark_departed('   ');
SELECT pii_audit.mark_departed('clerk-0099', NULL);
SELECT actor, departed_at, marked_by, cleared_at IS NULL AS active FROM pii_audit.departed;
SELECT pii_audit.clear_departed('clerk-0099');
SELECT pii_audit.clear_departed('clerk-0099');
SELECT pii_audit.clear_departed(NULL);
SELECT actor, cleared_by, cleared_at IS NOT NULL AS cleared FROM pii_audit.departed;
-- Marking again re-activates the mark.
SELECT pii_audit.mark_departed('clerk-0099', '2026-07-01 00:00+08');
SELECT actor, departed_at, cleared_at IS NULL AS active FROM pii_audit.departed;
RESET ROLE;
SET ROLE insider_officer;
SELECT pii_audit.mark_departed('clerk-0001');
SELECT count(*) FROM pii_audit.departed;
RESET ROLE;
SET ROLE insider_denied;
SELECT pii_audit.mark_departed('clerk-0001');
RESET ROLE;

-- Peer groups: administrators map actors; empty names are refused; officers only read.
SET ROLE insider_admin;
INSERT INTO pii_audit.peer_groups VALUES ('clerk-0421', 'counter_clerk'), ('svc-export', 'service');
INSERT INTO pii_audit.peer_groups VALUES ('clerk-0422', '');
INSERT INTO pii_audit.peer_groups VALUES ('clerk-0421', 'call_centre');
UPDATE pii_audit.peer_groups SET peer_group = 'call_centre' WHERE actor = 'clerk-0421';
RESET ROLE;
SET ROLE insider_officer;
SELECT * FROM pii_audit.peer_groups ORDER BY actor;
INSERT INTO pii_audit.peer_groups VALUES ('clerk-0500', 'counter_clerk');
RESET ROLE;
SELECT pii_audit._scorer_inputs_changed();

-- What scoring is doing, for officers.
SET ROLE insider_officer;
SELECT state, alert_threshold, scored_upto > 0 AS learning, last_error FROM pii_audit.scorer_status;
SELECT signals_held >= 0 AND held_raised >= 0 AND held_dropped >= 0 AND team_excused >= 0
    AS team_counts FROM pii_audit.scorer_status;
RESET ROLE;
SET ROLE insider_denied;
SELECT state FROM pii_audit.scorer_status;
RESET ROLE;

-- Scoring settings: reloadable, superuser-only, validated.
SHOW pii_audit.scoring;
SHOW pii_audit.alert_threshold;
SHOW pii_audit.highly_sensitive_categories;
SHOW pii_audit.baseline_save_interval;
SET pii_audit.alert_threshold = 60;
ALTER SYSTEM SET pii_audit.alert_threshold = 101;
ALTER SYSTEM SET pii_audit.alert_threshold = -1;
SHOW pii_audit.team_wait;
SET pii_audit.team_wait = 0;
ALTER SYSTEM SET pii_audit.team_wait = -1;
ALTER SYSTEM SET pii_audit.team_wait = '25h';
ALTER SYSTEM SET pii_audit.team_wait = 'soon';
ALTER SYSTEM SET pii_audit.highly_sensitive_categories = 'verification_code, Credential';
ALTER SYSTEM SET pii_audit.highly_sensitive_categories = 'verification_code,,bank account';
ALTER SYSTEM SET pii_audit.service_peer_groups = 'batch, ';
ALTER SYSTEM RESET pii_audit.service_peer_groups;
ALTER SYSTEM SET pii_audit.baseline_save_interval = '5s';
ALTER SYSTEM SET pii_audit.scoring = maybe;
ALTER SYSTEM SET pii_audit.business_relations_interval = 0;
SHOW pii_audit.business_relations_query;
SET ROLE insider_admin;
ALTER SYSTEM SET pii_audit.scoring = off;
RESET ROLE;

DROP TABLE insider_plain;
DROP ROLE insider_denied, insider_officer, insider_admin;
