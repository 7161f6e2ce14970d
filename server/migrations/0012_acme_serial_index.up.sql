-- ACME renewal-info (RFC 9773) and revoke-cert find a certificate version by its serial alone
-- (the certID carries the issuer's key identifier, not our issuer id), so the
-- (issuer_id, serial_number) unique index cannot serve them.
CREATE INDEX IF NOT EXISTS idx_certificate_versions_serial_number ON certificate_versions (serial_number);
