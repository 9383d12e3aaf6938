-- telecom.sql: the demo's schema and data, a telecom sales office (see scripts/demo.sh).
-- Run as a superuser in the database named by pii_audit.database, with pii_audit preloaded.
--
-- customers and sms_codes hold personal data and are labelled for the `pii` provider;
-- clerks is plain business data. The counter application connects as ONE shared role,
-- counter_app, and tells who the clerk at the desk is with SET pii_audit.end_user.
-- All data is generated and fictitious.

\set ON_ERROR_STOP 1

CREATE EXTENSION pii_audit;

CREATE TABLE customers (
    id        integer PRIMARY KEY,
    name      text NOT NULL,
    phone     text NOT NULL UNIQUE,
    id_number text NOT NULL,
    address   text NOT NULL
);

CREATE TABLE sms_codes (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    phone   text NOT NULL,
    code    text NOT NULL,
    sent_at timestamptz NOT NULL
);
CREATE INDEX ON sms_codes (phone, sent_at);

CREATE TABLE clerks (
    clerk_id text PRIMARY KEY,
    office   text NOT NULL,
    hired_on date NOT NULL
);

-- What is personal data, and which column says whose row it is.
SECURITY LABEL FOR pii ON COLUMN customers.name      IS 'name';
SECURITY LABEL FOR pii ON COLUMN customers.phone     IS 'phone, subject_key';
SECURITY LABEL FOR pii ON COLUMN customers.id_number IS 'id_number';
SECURITY LABEL FOR pii ON COLUMN customers.address   IS 'address';
SECURITY LABEL FOR pii ON COLUMN sms_codes.code      IS 'verification_code';
SECURITY LABEL FOR pii ON COLUMN sms_codes.phone     IS 'phone, subject_key';

-- 200 customers. Phone of customer N: 1380013 followed by N on four digits.
INSERT INTO customers (id, name, phone, id_number, address)
SELECT n,
       (ARRAY['Wang','Li','Zhang','Liu','Chen','Yang','Huang','Zhao','Wu','Zhou'])[1 + n % 10]
         || ' ' ||
       (ARRAY['Wei','Fang','Na','Min','Jing','Li','Qiang','Lei','Jun','Yan','Yong','Jie'])[1 + (n * 7) % 12],
       '1380013' || lpad(n::text, 4, '0'),
       '4501' || lpad(((n * 37) % 100)::text, 2, '0')
         || to_char(date '1960-01-01' + (n * 97) % 15000, 'YYYYMMDD')
         || lpad(n::text, 3, '0') || (n % 10)::text,
       (n % 300 + 1) || ' ' ||
       (ARRAY['Minzu Avenue','Chaoyang Road','Youai Road','Dongge Road','Xinmin Road'])[1 + n % 5]
         || ', Nanning'
FROM generate_series(1, 200) AS n;

-- Three verification codes per customer over the last two days. (Generated, not selected
-- from customers: reading customers.phone here would itself be an audited read.)
INSERT INTO sms_codes (phone, code, sent_at)
SELECT '1380013' || lpad(n::text, 4, '0'),
       lpad(((n * 7919 + k * 104729) % 1000000)::text, 6, '0'),
       now() - make_interval(mins => (n * 13 + k * 577) % 2880)
FROM generate_series(1, 200) AS n, generate_series(1, 3) AS k;

INSERT INTO clerks (clerk_id, office, hired_on) VALUES
    ('clerk-0107', 'Qingxiu sales office', '2016-03-01'),
    ('clerk-0421', 'Qingxiu sales office', '2019-09-15'),
    ('clerk-0533', 'Xixiangtang sales office', '2020-05-11'),
    ('clerk-0999', 'Xixiangtang sales office', '2021-02-22');

-- The counter application's one shared role.
CREATE ROLE counter_app LOGIN;
GRANT SELECT ON customers, sms_codes, clerks TO counter_app;

ANALYZE customers, sms_codes, clerks;
