-- Reverses 0003_certificates.
DROP TABLE IF EXISTS certificate_target_mappings;
DROP TABLE IF EXISTS deployment_targets;
DROP TABLE IF EXISTS certificate_revocations;
DROP TABLE IF EXISTS certificate_versions;
DROP TABLE IF EXISTS managed_certificates;
