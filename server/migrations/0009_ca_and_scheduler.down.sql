-- Reverses 0009_ca_and_scheduler.
DROP TABLE IF EXISTS scheduler_leaders;
DROP TABLE IF EXISTS issuer_crls;
DROP TABLE IF EXISTS issuer_ca_keys;
