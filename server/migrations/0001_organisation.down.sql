-- Reverses 0001_organisation.
DROP TABLE IF EXISTS certificate_profiles;
DROP TABLE IF EXISTS issuers;
DROP TABLE IF EXISTS renewal_policies;
DROP TABLE IF EXISTS owners;
DROP TABLE IF EXISTS teams;
