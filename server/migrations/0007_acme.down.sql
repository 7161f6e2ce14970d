-- Reverses 0007_acme.
DROP TABLE IF EXISTS acme_nonces;
DROP TABLE IF EXISTS acme_challenges;
DROP TABLE IF EXISTS acme_authorizations;
DROP TABLE IF EXISTS acme_orders;
DROP TABLE IF EXISTS acme_accounts;
