-- Capture through plain SQL: every way a query can read labelled columns, and the ways it does not.
SELECT name, phone FROM customers WHERE id = 1;
SELECT * FROM customers WHERE id = 2;
SELECT c FROM customers c WHERE id = 3;
SELECT row_to_json(c) FROM customers c WHERE id = 4;
SELECT id FROM customers WHERE phone = '13800000005';          -- only in a condition
SELECT segment FROM customers WHERE id = 6;                     -- no labelled column
SELECT count(*) FROM customers;                                 -- no column at all
SELECT t.topic, c.name FROM tickets t JOIN customers c ON c.id = t.customer_id WHERE t.id < 3;
SELECT topic FROM tickets WHERE customer_id = 7;                -- subject_key only: no event
SELECT id FROM customers WHERE id IN (SELECT customer_id FROM tickets) AND id_number LIKE 'ID1%';
SELECT id FROM customers c WHERE EXISTS (SELECT 1 FROM sms_codes s WHERE s.phone = c.phone) AND id < 3;
WITH recent AS (SELECT phone, code FROM sms_codes WHERE id <= 2) SELECT count(*) FROM recent;
SELECT name FROM customers WHERE id = 1 UNION ALL SELECT code FROM sms_codes WHERE id = 1;
SELECT c1.name, c2.name FROM customers c1 JOIN customers c2 ON c2.id = c1.id + 1 WHERE c1.id = 1;
-- Through a view: the base table's columns count.
SELECT name FROM customer_names WHERE id = 8;
SELECT id FROM customer_names WHERE id = 8;
SET pii_audit.end_user = 'clerk-0421';
SELECT name FROM customers WHERE id = 9;
BEGIN;
SET LOCAL pii_audit.end_user = 'clerk-0007';
SELECT phone FROM customers WHERE id = 10;
COMMIT;
SELECT phone FROM customers WHERE id = 11;
RESET pii_audit.end_user;
-- Literals of every kind are replaced; comments go.
SELECT name /* customer 13800000012 */ FROM customers WHERE phone = E'1380000\x30012' OR id = 12 -- 12
  OR address = $$street 12$$;
SELECT * FROM new_events();
-- The same text means different statements under standard_conforming_strings on and off: a
-- backslash ends the first literal, or escapes its quote and the rest is a comment. The text
-- of a statement seen before is reused, but never across that setting.
SET escape_string_warning = off;
SELECT name FROM customers WHERE id = 13 AND name <> 'x\' AND name <> ' --'
;
SET standard_conforming_strings = off;
SELECT name FROM customers WHERE id = 13 AND name <> 'x\' AND name <> ' --'
;
RESET standard_conforming_strings;
SELECT name FROM customers WHERE id = 13 AND name <> 'x\' AND name <> ' --'
;
RESET escape_string_warning;
SELECT query_text FROM new_events();
-- Events share the rows of what they have in common: the same statement from the same session
-- is one statement row and one session row, however often and in however many batches it runs;
-- another end user is another session.
SELECT name FROM customers WHERE id = 21;
SELECT wait_for_trail();
SELECT name FROM customers WHERE id = 22;
SET pii_audit.end_user = 'clerk-0999';
SELECT name FROM customers WHERE id = 23;
RESET pii_audit.end_user;
SELECT advance_seen() AS since \gset
SELECT sum(g.event_count) AS events, count(DISTINCT g.statement_id) AS statements,
       count(DISTINCT g.session_id) AS sessions
FROM pii_audit.trail_groups g WHERE g.first_event_id > :since;
SELECT count(*) AS statement_rows FROM pii_audit.trail_statements
WHERE query_text = 'SELECT name FROM customers WHERE id = $1' AND relation = 'public.customers';
-- Column and category lists: each item once, in column order, whatever set of columns a
-- statement reads. The label cache keeps the lists of the last few sets of columns read (more
-- sets than it keeps are read below, and the first again); past 64 labelled columns a relation's
-- lists are built per statement. Also after a label changes, and when a statement reads the
-- relation twice.
CREATE FUNCTION make_labelled(name text, n integer) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('CREATE TABLE %I (id integer, ', name)
        || (SELECT string_agg(format('c%s text', i), ', ') FROM generate_series(1, n) i) || ')';
    FOR i IN 1..n LOOP
        EXECUTE format('SECURITY LABEL FOR pii ON COLUMN %I.c%s IS %L', name, i,
                       CASE WHEN i % 3 = 0 THEN 'phone' WHEN i % 3 = 1 THEN 'name,address'
                            ELSE 'address' END);
    END LOOP;
    EXECUTE format('INSERT INTO %I (id) VALUES (1)', name);
END
$$;
SELECT make_labelled('narrow', 10), make_labelled('wide', 70);
SELECT c1, c2 FROM narrow;
SELECT c3 FROM narrow;
SELECT c1, c2 FROM narrow;
SELECT c4, c5, c6 FROM narrow;
SELECT c7 FROM narrow;
SELECT c8 FROM narrow;
SELECT c9, c10 FROM narrow;
SELECT c1, c2 FROM narrow;
SELECT c1 FROM narrow a WHERE EXISTS (SELECT c6 FROM narrow b WHERE b.c3 = a.c2);
SELECT c1, c2 FROM narrow;
SECURITY LABEL FOR pii ON COLUMN narrow.c2 IS 'id_number';
SELECT c1, c2 FROM narrow;
SELECT * FROM narrow;
SELECT c64, c65, c70 FROM wide;
SELECT c2 FROM wide;
SELECT c1 FROM wide a WHERE EXISTS (SELECT c66 FROM wide b WHERE b.c3 = a.c2);
SELECT relation, columns, categories FROM new_events() WHERE command = 'SELECT';
DROP TABLE narrow, wide;
DROP FUNCTION make_labelled(text, integer);
SELECT kind, command, count(*) FROM new_events() GROUP BY kind, command;
