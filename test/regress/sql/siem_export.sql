-- SIEM export, pull side: the role pii_audit_siem, export() and export_alerts() in every format,
-- the views rising-column collectors poll, and clear errors for bad arguments. Lines are shown
-- with what changes from run to run (times, ids, pids, hashes) masked by masked().
CREATE FUNCTION masked(line text) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    r text := line;
BEGIN
    r := regexp_replace(r, '\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z', '<time>', 'g');
    r := regexp_replace(r, '[A-Z][a-z]{2} \d\d \d{4} \d\d:\d\d:\d\d\.\d{3} UTC', '<time>', 'g');
    r := regexp_replace(r, '"(id|uid|sequence|event_id|alert_id|alert_event_id|query_id|pid|backend_pid|time|logged_time|created_time|first_seen_time|modified_time)":"?-?\d+"?', '"\1":<n>', 'g');
    r := regexp_replace(r, '"(subjects|evidence)":\[[^]]*\]', '"\1":[<ids>]', 'g');
    r := regexp_replace(r, '(^|[ \t|])(rt|externalId|dvcpid|cn2|cn3|start|deviceCustomDate1|eventId|backendPid|queryId|alertId|subjects|flexString1|evidence)=-?[0-9,]+', '\1\2=<n>', 'g');
    r := regexp_replace(r, ' cs6=[0-9,]+', ' cs6=<ids>', 'g');
    r := regexp_replace(r, '(event_id|query_id|alert_event_id|alert_id|subjects|evidence)="[-0-9,]+"', '\1="<n>"', 'g');
    r := regexp_replace(r, '^(<\d+>1 <time> \S+ pii_audit) \d+ ', '\1 <pid> ');
    RETURN r;
END
$$;

-- A table, a column, a role, an application and an end user with hostile names.
SELECT wait_for_trail();
CREATE TEMP TABLE mark AS SELECT coalesce(max(event_id), 0) AS id FROM pii_audit.events;
CREATE TABLE "evil|ta=ble\]""x" (id integer, "co
l,=|\]""ü" text);
INSERT INTO "evil|ta=ble\]""x" VALUES (1, 'v');
SECURITY LABEL FOR pii ON COLUMN "evil|ta=ble\]""x"."co
l,=|\]""ü" IS 'name';
CREATE ROLE "r|o=l\e]""x ü";
GRANT SELECT ON "evil|ta=ble\]""x" TO "r|o=l\e]""x ü";
SET application_name = 'app|=\]"x	tab';
SET pii_audit.end_user = 'clerk|=\]"ü 非';
SET ROLE "r|o=l\e]""x ü";
SELECT "co
l,=|\]""ü" FROM "evil|ta=ble\]""x" WHERE id = 1;
RESET ROLE;
RESET pii_audit.end_user;
RESET application_name;
SELECT phone FROM customers WHERE id = 7;
-- (the worker stores them; a statement's snapshot sees them only if it starts afterwards)
SELECT wait_for_trail();
CREATE TEMP TABLE hostile AS
SELECT event_id, kind FROM pii_audit.events WHERE event_id > (SELECT id FROM mark)
  AND (relation LIKE '%evil%' OR relation = 'public.customers')
ORDER BY event_id;
SELECT kind, count(*) FROM hostile GROUP BY kind ORDER BY kind;

-- Each format, field by field, on these real events (the label change, the hostile read, a
-- read of a keyed table).
SELECT h.kind, masked(x.line)
FROM hostile h, LATERAL pii_audit.export(h.event_id - 1, 1, 'json') x ORDER BY h.event_id;
SELECT h.kind, masked(x.line)
FROM hostile h, LATERAL pii_audit.export(h.event_id - 1, 1, 'ocsf') x ORDER BY h.event_id;
SELECT h.kind, masked(x.line)
FROM hostile h, LATERAL pii_audit.export(h.event_id - 1, 1, 'cef') x ORDER BY h.event_id;
SELECT h.kind, masked(x.line)
FROM hostile h, LATERAL pii_audit.export(h.event_id - 1, 1, 'leef') x ORDER BY h.event_id;
SELECT h.kind, masked(x.line)
FROM hostile h, LATERAL pii_audit.export(h.event_id - 1, 1, 'rfc5424') x ORDER BY h.event_id;

-- JSON lines read back: the names arrive whole.
SELECT x.line::jsonb #>> '{db,sql,table}' AS "table",
       x.line::jsonb #>> '{pii_audit,columns,0}' AS "column",
       x.line::jsonb #>> '{user,effective,name}' AS role,
       x.line::jsonb #>> '{pii_audit,application_name}' AS application,
       x.line::jsonb #>> '{pii_audit,end_user}' AS end_user
FROM hostile h, LATERAL pii_audit.export(h.event_id - 1, 1, 'json') x
WHERE h.kind = 'read' AND x.line LIKE '%evil%';

-- Every event of the trail, in every format: one line each, in id order, no gap, none twice;
-- the same whether pulled at once or 7 at a time as a collector does; json and ocsf lines are
-- JSON objects; the views give the same lines as export().
CREATE TEMP TABLE all_ids AS SELECT event_id FROM pii_audit.events;
CREATE FUNCTION pull_in_batches(fmt text, batch integer) RETURNS TABLE (event_id bigint, line text)
LANGUAGE plpgsql AS $$
DECLARE
    last bigint := 0;
    got bigint;
BEGIN
    LOOP
        got := 0;
        FOR event_id, line IN SELECT * FROM pii_audit.export(last, batch, fmt) LOOP
            IF event_id <= last THEN
                RAISE EXCEPTION 'export went backwards: % after %', event_id, last;
            END IF;
            last := event_id;
            got := got + 1;
            RETURN NEXT;
        END LOOP;
        EXIT WHEN got = 0;
    END LOOP;
END
$$;
SELECT f.format,
       (SELECT array_agg(x.event_id) FROM pii_audit.export(0, 1000000, f.format) x)
         = (SELECT array_agg(a.event_id ORDER BY a.event_id) FROM all_ids a) AS all_in_order,
       (SELECT array_agg(x.line) FROM pii_audit.export(0, 1000000, f.format) x)
         = (SELECT array_agg(b.line ORDER BY b.event_id) FROM pull_in_batches(f.format, 7) b)
         AS batches_same,
       (SELECT array_agg(x.line) FROM pii_audit.export(0, 1000000, f.format) x)
         = (SELECT array_agg(v.line ORDER BY v.event_id) FROM pii_audit.export_events v
            WHERE v.format = f.format AND v.event_id > 0 AND v.event_id <= (SELECT max(event_id) FROM all_ids))
         AS view_same,
       (SELECT bool_and(x.line !~ '[\n\r]') FROM pii_audit.export(0, 1000000, f.format) x)
         AS one_line_each
FROM (VALUES ('json'), ('ocsf'), ('cef'), ('leef'), ('rfc5424')) f(format);
SELECT count(*) = (SELECT count(*) FROM all_ids) AS json_objects
FROM pii_audit.export(0, 1000000, 'json') x WHERE jsonb_typeof(x.line::jsonb) = 'object'
  AND x.line::jsonb ? '@timestamp' AND (x.line::jsonb #>> '{event,id}')::bigint = x.event_id;
SELECT x.line::jsonb ->> 'class_uid' AS class_uid, x.line::jsonb ->> 'activity_id' AS activity,
       x.line::jsonb ->> 'type_uid' AS type_uid, count(*) > 0 AS some
FROM pii_audit.export(0, 1000000, 'ocsf') x GROUP BY 1, 2, 3 ORDER BY 1, 2, 3;
-- A window past the end is empty, a start before the first event starts at the first.
SELECT count(*) FROM pii_audit.export((SELECT max(event_id) FROM all_ids), 10);
SELECT min(event_id) = (SELECT min(event_id) FROM all_ids) AS from_first FROM pii_audit.export(0, 5);

-- Alerts: raised (here by hand, with hostile text) and changed by an officer, each change a new
-- alert event with its own rising id.
CREATE ROLE siem_officer LOGIN IN ROLE pii_audit_officer;
CREATE TEMP TABLE alerts_before AS SELECT coalesce(max(alert_event_id), 0) AS id FROM pii_audit.alert_events;
INSERT INTO pii_audit.alerts (alert_time, actor, peer_group, detector, score, severity, explanation, evidence)
VALUES ('2026-07-01 10:00+00', 'clerk|=\]"ü', 'grp=x', 'bulk_reading', 71, 'high',
        'read 23 "subjects" \ = | ] today', ARRAY(SELECT event_id FROM hostile ORDER BY event_id));
SET ROLE siem_officer;
UPDATE pii_audit.alerts SET status = 'acknowledged', note = E'asked the\nbranch manager'
WHERE actor = 'clerk|=\]"ü';
UPDATE pii_audit.alerts SET note = E'asked the\nbranch manager' WHERE actor = 'clerk|=\]"ü';
UPDATE pii_audit.alerts SET status = 'closed' WHERE actor = 'clerk|=\]"ü';
RESET ROLE;
SELECT ae.alert_event_id - b.id AS n, ae.change, ae.status, ae.status_by, ae.note
FROM pii_audit.alert_events ae, alerts_before b WHERE ae.alert_event_id > b.id ORDER BY 1;
SELECT f.format, masked(x.line)
FROM (VALUES (1, 'json'), (2, 'ocsf'), (3, 'cef'), (4, 'leef'), (5, 'rfc5424')) f(o, format),
     alerts_before b, LATERAL pii_audit.export_alerts(b.id, 10, f.format) x
ORDER BY f.o, x.alert_event_id;
SELECT (SELECT array_agg(x.alert_event_id) FROM pii_audit.export_alerts(0, 1000000) x)
       = (SELECT array_agg(alert_event_id ORDER BY alert_event_id) FROM pii_audit.alert_events)
       AS alerts_in_order,
       (SELECT array_agg(x.line) FROM pii_audit.export_alerts(0, 1000000, 'cef') x)
       = (SELECT array_agg(v.line ORDER BY v.alert_event_id) FROM pii_audit.export_alert_events v
          WHERE v.format = 'cef' AND v.alert_event_id > 0) AS view_same;
-- The history cannot be rewritten.
UPDATE pii_audit.alert_events SET status = 'open';
DELETE FROM pii_audit.alert_events;
TRUNCATE pii_audit.alert_events;

-- pii_audit_siem reads the export and nothing else.
CREATE ROLE siem LOGIN IN ROLE pii_audit_siem;
SET ROLE siem;
SELECT count(*) > 0 AS exports FROM pii_audit.export(0, 100, 'cef');
SELECT count(*) > 0 AS exports_alerts FROM pii_audit.export_alerts(0, 100, 'leef');
SELECT count(*) > 0 AS polls FROM pii_audit.export_events WHERE format = 'json' AND event_id > 0;
SELECT count(*) > 0 AS polls_alerts FROM pii_audit.export_alert_events
WHERE format = 'rfc5424' AND alert_event_id > 0;
SELECT count(*) FROM pii_audit.access_log;
SELECT count(*) FROM pii_audit.events;
SELECT count(*) FROM pii_audit.login_log;
SELECT count(*) FROM pii_audit.trail_groups;
SELECT count(*) FROM pii_audit.trail_sessions;
SELECT count(*) FROM pii_audit.alerts;
SELECT count(*) FROM pii_audit.alert_events;
SELECT count(*) FROM pii_audit.status;
SELECT count(*) FROM pii_audit.labelled_columns;
SELECT count(*) FROM pii_audit.events_after(0);
SELECT count(*) FROM pii_audit.subject_access('1380000007');
SELECT count(*) FROM pii_audit.breach_scope('postgres', now() - interval '1 day', now());
SELECT pii_audit.subject_hash('1380000007');
SELECT count(*) FROM customers;
UPDATE pii_audit.alerts SET status = 'closed';
RESET ROLE;
SET ROLE siem_officer;
SELECT count(*) FROM pii_audit.export(0, 10);
SELECT count(*) FROM pii_audit.export_events;
RESET ROLE;

-- Bad arguments: clear errors, before anything is read.
SELECT * FROM pii_audit.export(0, 10, 'xml');
SELECT * FROM pii_audit.export(0, 10, 'JSON');
SELECT * FROM pii_audit.export(0, -1);
SELECT * FROM pii_audit.export(0, 0);
SELECT * FROM pii_audit.export(0, 1000001);
SELECT * FROM pii_audit.export(-5);
SELECT * FROM pii_audit.export(NULL);
SELECT * FROM pii_audit.export(0, NULL);
SELECT * FROM pii_audit.export(0, 10, NULL);
SELECT * FROM pii_audit.export_alerts(0, 10, 'syslog');
SELECT * FROM pii_audit.export_alerts(0, -1);
SELECT * FROM pii_audit.export_alerts(-1);
SELECT * FROM pii_audit.export_alerts(NULL);
SELECT * FROM pii_audit.export_alerts(0, 10, NULL);
SELECT count(*) FROM pii_audit.export_events WHERE format = 'xml';

DROP TABLE "evil|ta=ble\]""x";
DROP ROLE "r|o=l\e]""x ü", siem, siem_officer;
DROP FUNCTION pull_in_batches(text, integer);
DROP FUNCTION masked(text);
