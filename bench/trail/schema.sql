-- The keyed tables the trail loader (loader.cpp) writes reads of, labelled as pii_audit labels
-- them, its clerks, and its SQL function. psql variables: subjects (customers c1 ..
-- c<subjects>), actors (roles clerk_1 .. clerk_<actors>), loader (the module's absolute path).
-- Used by bench/trail.sh and test/server/retention.sh.
CREATE TABLE customers (id text PRIMARY KEY, name text, phone text, address text);
INSERT INTO customers SELECT 'c' || g, 'name ' || g, '138' || g, 'street ' || g
FROM generate_series(1, :subjects) g;
CREATE TABLE accounts (customer_id text, iban text, balance numeric);
CREATE TABLE visits (customer_id text, visited_on date, diagnosis text);
SECURITY LABEL FOR pii ON COLUMN customers.id IS 'subject_key';
SECURITY LABEL FOR pii ON COLUMN customers.name IS 'name';
SECURITY LABEL FOR pii ON COLUMN customers.phone IS 'phone';
SECURITY LABEL FOR pii ON COLUMN customers.address IS 'address';
SECURITY LABEL FOR pii ON COLUMN accounts.customer_id IS 'subject_key';
SECURITY LABEL FOR pii ON COLUMN accounts.iban IS 'bank_account';
SECURITY LABEL FOR pii ON COLUMN visits.customer_id IS 'subject_key';
SECURITY LABEL FOR pii ON COLUMN visits.diagnosis IS 'health';
SELECT format('CREATE ROLE clerk_%s', g) FROM generate_series(1, :actors) g
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'clerk_' || g) \gexec
CREATE FUNCTION bench_load(bigint, bigint, bigint, int, int, int, timestamptz, timestamptz, int,
                           text, oid[])
RETURNS bigint LANGUAGE c STRICT AS :'loader', 'pii_audit_bench_load';
