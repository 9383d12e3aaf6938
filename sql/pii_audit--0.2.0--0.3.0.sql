-- pii_audit 0.2.0 -> 0.3.0. There is no install script of 0.3.0: CREATE EXTENSION runs
-- pii_audit--0.2.0.sql and then this script, so new installs and upgraded ones are the same.
\echo Use "ALTER EXTENSION pii_audit UPDATE TO '0.3.0'" to load this file. \quit
