-- The worked example of the README: a sales-office clerk passes on 120 customers' phone numbers
-- and SMS verification codes while three colleagues do normal lookups, all through one pooled
-- role that names the human in pii_audit.end_user.
CREATE TABLE nn_customers (id integer PRIMARY KEY, name text, phone text UNIQUE, id_number text);
INSERT INTO nn_customers
SELECT g, 'customer-' || g, '1500000' || lpad(g::text, 4, '0'), '4501' || lpad(g::text, 14, '0')
FROM generate_series(1, 1000) g;
CREATE TABLE nn_codes (phone text NOT NULL, code text NOT NULL, sent_at timestamptz NOT NULL);
INSERT INTO nn_codes
SELECT '1500000' || lpad(g::text, 4, '0'), lpad((g * 7919 % 1000000)::text, 6, '0'), now()
FROM generate_series(1, 1000) g;
CREATE INDEX ON nn_codes (phone);
-- The phone number identifies the customer in both tables.
SECURITY LABEL FOR pii ON COLUMN nn_customers.phone IS 'phone, subject_key';
SECURITY LABEL FOR pii ON COLUMN nn_customers.name IS 'name';
SECURITY LABEL FOR pii ON COLUMN nn_customers.id_number IS 'id_number';
SECURITY LABEL FOR pii ON COLUMN nn_codes.phone IS 'phone, subject_key';
SECURITY LABEL FOR pii ON COLUMN nn_codes.code IS 'verification_code';
ANALYZE nn_customers, nn_codes;
CREATE ROLE nn_counter_app NOLOGIN;
GRANT USAGE ON SCHEMA public TO nn_counter_app;
GRANT SELECT ON nn_customers, nn_codes TO nn_counter_app;
CREATE TABLE nn_window (since timestamptz, until timestamptz);
INSERT INTO nn_window VALUES (clock_timestamp(), NULL);

SET ROLE nn_counter_app;
-- Normal work: three clerks look customers up by id, 600 lookups.
DO $$
BEGIN
    FOR i IN 1..600 LOOP
        PERFORM set_config('pii_audit.end_user', 'clerk-' || (i % 3 + 1), true);
        PERFORM name, phone FROM nn_customers WHERE id = (i * 37) % 1000 + 1;
    END LOOP;
END
$$;
-- The Nanning clerk: customers 501-620, each one's phone and then the code sent to it.
DO $$
DECLARE
    p text;
BEGIN
    PERFORM set_config('pii_audit.end_user', 'clerk-nanning', true);
    FOR i IN 501..620 LOOP
        SELECT phone INTO p FROM nn_customers WHERE id = i;
        PERFORM code FROM nn_codes WHERE phone = p;
    END LOOP;
END
$$;
RESET ROLE;
UPDATE nn_window SET until = clock_timestamp();
SELECT wait_for_trail();

-- Exactly the 120 customers he served, each read twice (phone, code), with both categories sets.
CREATE TABLE nn_scope AS
SELECT b.* FROM nn_window w, pii_audit.breach_scope('clerk-nanning', w.since, w.until) b;
SELECT count(*) AS subjects,
       count(*) FILTER (WHERE identifier IN (SELECT phone FROM nn_customers WHERE id BETWEEN 501 AND 620)) AS served,
       min(reads) AS min_reads, max(reads) AS max_reads
FROM nn_scope;
SELECT relations, categories, count(*) FROM nn_scope GROUP BY 1, 2;

-- One of them asks who read their data: the clerk, in the window, both tables; and, after the
-- window, breach_scope's own scans of a key column (naming people is a read too): one per call,
-- since nn_customers (read first) names everyone, so nn_codes is not read.
SELECT wait_for_trail();
SELECT a.end_user, a.current_user_name, a.relation, a.categories, a.match,
       a.event_time BETWEEN w.since AND w.until AS in_window
FROM nn_window w, pii_audit.subject_access('15000000555') a
WHERE a.match = 'recorded' ORDER BY a.event_time, a.event_id;

-- A colleague's scope holds only the customers she looked up.
SELECT count(*) > 0 AS some, bool_and(identifier IN (SELECT phone FROM nn_customers)) AS all_known
FROM nn_window w, pii_audit.breach_scope('clerk-2', w.since, w.until);

-- The trail holds no phone number, id number or code in any column.
SELECT count(*) AS leaked
FROM pii_audit.events e, nn_customers c
WHERE e.event_time >= (SELECT since FROM nn_window)
  AND (strpos(e::text, c.phone) > 0 OR strpos(e::text, c.id_number) > 0);
SELECT count(*) AS leaked_codes
FROM pii_audit.events e, nn_codes c
WHERE e.event_time >= (SELECT since FROM nn_window) AND strpos(e.query_text, c.code) > 0;

DROP TABLE nn_scope;
REVOKE ALL ON nn_customers, nn_codes FROM nn_counter_app;
REVOKE ALL ON SCHEMA public FROM nn_counter_app;
DROP ROLE nn_counter_app;
