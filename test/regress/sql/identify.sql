-- Naming subjects: pii_audit._identify_subjects reads a key column and returns, once per hash
-- asked for, the identifier that hashes to it, made exactly as the capture makes identifiers
-- (so breach_scope names the people the trail holds hashes of).
CREATE DOMAIN id_code AS text CHECK (VALUE <> '');
CREATE TABLE id_keys (t text, b char(6), i integer, n numeric(10, 2), d id_code, u uuid, pos int);
INSERT INTO id_keys VALUES
    ('alice', 'ab', 7, 1.50, 'dom-1', '6ba7b810-9dad-11d1-80b4-00c04fd430c8', 1),
    ('bob', 'cd  ', -42, 2.00, 'dom-2', '6ba7b811-9dad-11d1-80b4-00c04fd430c8', 2),
    (NULL, NULL, NULL, NULL, NULL, NULL, 3),
    ('alice', 'ab', 7, 1.5, 'dom-1', '6ba7b810-9dad-11d1-80b4-00c04fd430c8', 4);
-- Each type's identifier: char(n) without its padding, numeric without trailing zeros.
SELECT c.col, i.identifier, i.subject_hash = pii_audit.subject_hash(i.identifier) AS same_hash
FROM (VALUES ('t'), ('b'), ('i'), ('n'), ('d'), ('u')) c(col),
     LATERAL pii_audit._identify_subjects('id_keys', c.col::name,
         ARRAY(SELECT pii_audit.subject_hash(x) FROM unnest(ARRAY['alice', 'bob', 'ab', 'cd', '7',
               '-42', '1.5', '2', 'dom-1', 'dom-2', '6ba7b810-9dad-11d1-80b4-00c04fd430c8',
               '6ba7b811-9dad-11d1-80b4-00c04fd430c8']) x)) i
ORDER BY 1, 2;
-- Once per hash (alice's two rows give one row), hashes asked twice or NULL, and hashes no key
-- makes: nothing for them.
SELECT identifier FROM pii_audit._identify_subjects('id_keys', 't',
    ARRAY[pii_audit.subject_hash('alice'), pii_audit.subject_hash('alice'), NULL,
          pii_audit.subject_hash('carol'), 12345]) ORDER BY 1;
SELECT count(*) FROM pii_audit._identify_subjects('id_keys', 't', '{}');
SELECT count(*) FROM pii_audit._identify_subjects('id_keys', 't', NULL);
-- Partitions and inheritance children are read as a query on the parent reads them (a child's
-- key column may sit at another position).
CREATE TABLE id_parted (k text, v int) PARTITION BY LIST (v);
CREATE TABLE id_parted_1 PARTITION OF id_parted FOR VALUES IN (1);
CREATE TABLE id_parted_2 (v int, k text);
ALTER TABLE id_parted ATTACH PARTITION id_parted_2 FOR VALUES IN (2);
INSERT INTO id_parted VALUES ('p-one', 1), ('p-two', 2);
CREATE TABLE id_parent (k text);
CREATE TABLE id_child (x int, k text) INHERITS (id_parent);
INSERT INTO id_parent VALUES ('in-parent');
INSERT INTO id_child (x, k) VALUES (1, 'in-child');
SELECT identifier FROM pii_audit._identify_subjects('id_parted', 'k',
    ARRAY[pii_audit.subject_hash('p-one'), pii_audit.subject_hash('p-two')]) ORDER BY 1;
SELECT identifier FROM pii_audit._identify_subjects('id_parent', 'k',
    ARRAY[pii_audit.subject_hash('in-parent'), pii_audit.subject_hash('in-child')]) ORDER BY 1;
-- The read is audited like any read of a labelled column.
SECURITY LABEL FOR pii ON COLUMN id_keys.t IS 'name, subject_key';
SELECT wait_for_trail();
SELECT advance_seen() >= 0 AS reset;
SELECT count(*) FROM pii_audit._identify_subjects('id_keys', 't', ARRAY[pii_audit.subject_hash('bob')]);
SELECT wait_for_trail();
SELECT command, relation, categories, row_count, query_text FROM new_events() WHERE relation = 'public.id_keys' AND kind = 'read';
-- Bad arguments, and who may call it (nobody but the extension's owner: breach_scope).
SELECT * FROM pii_audit._identify_subjects('id_keys', 'no_such_column', ARRAY[1::bigint]);
SELECT * FROM pii_audit._identify_subjects('id_keys', 'ctid', ARRAY[1::bigint]);
SELECT * FROM pii_audit._identify_subjects(0::oid::regclass, 't', ARRAY[1::bigint]);
CREATE VIEW id_view AS SELECT t FROM id_keys;
SELECT identifier FROM pii_audit._identify_subjects('id_view', 't', ARRAY[pii_audit.subject_hash('bob')]);
CREATE ROLE id_snoop;
GRANT SELECT ON id_keys TO id_snoop;
GRANT USAGE ON SCHEMA pii_audit TO id_snoop;
SET ROLE id_snoop;
SELECT * FROM pii_audit._identify_subjects('public.id_keys', 't', ARRAY[1::bigint]);
RESET ROLE;
DROP VIEW id_view;
DROP TABLE id_keys, id_parted, id_parent, id_child CASCADE;
DROP DOMAIN id_code;
REVOKE USAGE ON SCHEMA pii_audit FROM id_snoop;
DROP ROLE id_snoop;
