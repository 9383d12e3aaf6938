-- Labels: what is accepted, what is refused and why, who may change them, and that every change
-- is itself in the trail.
SECURITY LABEL FOR pii ON COLUMN customers.name IS 'name';
SECURITY LABEL FOR pii ON COLUMN customers.phone IS 'Phone , subject_key';
SECURITY LABEL FOR pii ON COLUMN customers.id_number IS 'id_number';
SECURITY LABEL FOR pii ON COLUMN customers.address IS 'address';
SECURITY LABEL FOR pii ON COLUMN sms_codes.phone IS 'phone, subject_key';
SECURITY LABEL FOR pii ON COLUMN sms_codes.code IS 'verification_code';
SECURITY LABEL FOR pii ON COLUMN tickets.customer_id IS 'subject_key';

-- Refused labels, each with a message that says what is allowed.
SECURITY LABEL FOR pii ON COLUMN customers.segment IS 'shoe_size';
SECURITY LABEL FOR pii ON COLUMN customers.segment IS '';
SECURITY LABEL FOR pii ON COLUMN customers.segment IS 'phone,,name';
SECURITY LABEL FOR pii ON COLUMN customers.segment IS 'phone; DROP TABLE customers';
SECURITY LABEL FOR pii ON COLUMN customers.segment IS 'phone, phone';
SECURITY LABEL FOR pii ON TABLE customers IS 'phone';
CREATE VIEW customer_names AS SELECT id, name FROM customers;
SECURITY LABEL FOR pii ON COLUMN customer_names.name IS 'name';
SECURITY LABEL FOR pii ON COLUMN pg_catalog.pg_class.relname IS 'name';
SECURITY LABEL FOR nosuchprovider ON COLUMN customers.segment IS 'phone';

-- Only superusers and pii_audit_admin members may change labels, even on their own table.
CREATE ROLE table_owner LOGIN;
CREATE TABLE owned (id int, secret text);
ALTER TABLE owned OWNER TO table_owner;
SET ROLE table_owner;
SECURITY LABEL FOR pii ON COLUMN owned.secret IS 'credential';
RESET ROLE;
GRANT pii_audit_admin TO table_owner;
SET ROLE table_owner;
SECURITY LABEL FOR pii ON COLUMN owned.secret IS 'credential';
SECURITY LABEL FOR pii ON COLUMN owned.secret IS 'credential, health';
SECURITY LABEL FOR pii ON COLUMN owned.secret IS NULL;
RESET ROLE;
REVOKE pii_audit_admin FROM table_owner;
SET ROLE table_owner;
SECURITY LABEL FOR pii ON COLUMN owned.id IS NULL;
RESET ROLE;

-- A change that rolls back is recorded as failed.
BEGIN;
SECURITY LABEL FOR pii ON COLUMN customers.segment IS 'location';
ROLLBACK;

SELECT kind, command, relation, columns, categories, status FROM new_events();
SELECT column_name, detail FROM pii_audit.label_changes ORDER BY event_id;

-- Labels follow renamed columns; the view shows what is labelled.
ALTER TABLE customers RENAME COLUMN address TO home_address;
SELECT schema_name, table_name, column_name, label, categories, subject_key
FROM pii_audit.labelled_columns ORDER BY table_name, attnum;
ALTER TABLE customers RENAME COLUMN home_address TO address;

-- Administrators can add categories; built-in ones and ones in use stay.
INSERT INTO pii_audit.categories (name, description) VALUES ('loyalty_id', 'loyalty card number');
INSERT INTO pii_audit.categories (name, description) VALUES ('Bad Name', 'refused');
INSERT INTO pii_audit.categories (name, description) VALUES ('subject_key', 'refused');
CREATE TABLE loyalty (card text);
SECURITY LABEL FOR pii ON COLUMN loyalty.card IS 'loyalty_id';
DELETE FROM pii_audit.categories WHERE name = 'loyalty_id';
DELETE FROM pii_audit.categories WHERE name = 'phone';
SECURITY LABEL FOR pii ON COLUMN loyalty.card IS NULL;
DELETE FROM pii_audit.categories WHERE name = 'loyalty_id';
SELECT count(*) AS builtin_categories FROM pii_audit.categories WHERE builtin;
SELECT count(*) FROM new_events();

-- Dropping a labelled column, or its table, takes the label with it: the trail says so.
CREATE TABLE leaving (id int, phone text, code text, note text);
SECURITY LABEL FOR pii ON COLUMN leaving.phone IS 'phone, subject_key';
SECURITY LABEL FOR pii ON COLUMN leaving.code IS 'verification_code';
SELECT count(*) FROM new_events();
ALTER TABLE leaving DROP COLUMN note;
ALTER TABLE leaving DROP COLUMN code;
BEGIN;
DROP TABLE leaving;
ROLLBACK;
DROP TABLE leaving;
SELECT wait_for_trail();
SELECT e.command, e.relation, e.columns, e.categories, e.status, e.detail
FROM pii_audit.access_log e, seen WHERE e.event_id > seen.last_event_id ORDER BY e.event_id;
SELECT count(*) FROM new_events();

-- A label change undone by ROLLBACK TO SAVEPOINT did not happen: failed, though the
-- transaction commits; one in a released savepoint did.
CREATE TABLE saved (a text, b text);
BEGIN;
SAVEPOINT s1;
SECURITY LABEL FOR pii ON COLUMN saved.a IS 'name';
ROLLBACK TO SAVEPOINT s1;
SAVEPOINT s2;
SECURITY LABEL FOR pii ON COLUMN saved.b IS 'phone';
SAVEPOINT s3;
SECURITY LABEL FOR pii ON COLUMN saved.b IS 'email';
RELEASE SAVEPOINT s3;
RELEASE SAVEPOINT s2;
COMMIT;
SELECT wait_for_trail();
SELECT e.columns, e.status, e.detail
FROM pii_audit.access_log e, seen WHERE e.event_id > seen.last_event_id ORDER BY e.event_id;
SELECT column_name, label FROM pii_audit.labelled_columns WHERE table_name = 'saved';
SELECT count(*) FROM new_events();
DROP TABLE saved;
SELECT count(*) FROM new_events();
