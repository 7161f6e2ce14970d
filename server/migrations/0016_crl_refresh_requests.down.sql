DROP TRIGGER IF EXISTS certificate_revocations_request_crl_refresh ON certificate_revocations;
DROP FUNCTION IF EXISTS certctl_request_crl_refresh();
DROP TABLE IF EXISTS crl_refresh_requests;
