-- Prompt CRL refresh: every revocation asks for its issuer's CRL to be re-signed soon, and the
-- scheduler leader's crl_refresh loop re-signs each issuer that asked (one re-sign for any
-- number of revocations since its last tick, so bursts coalesce). The request is written by a
-- trigger, in the revoking transaction, so no revocation path (REST, bulk, ACME, SQL) can skip
-- it and a request is visible exactly when its revocation is. `generation` lets the loop
-- delete only the request it served: a revocation that lands while the CRL is being signed
-- bumps it, and the request stays for the next tick.
CREATE TABLE IF NOT EXISTS crl_refresh_requests (
    issuer_id    TEXT PRIMARY KEY,
    generation   BIGINT NOT NULL DEFAULT 1,
    requested_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT crl_refresh_requests_issuer_id_fkey FOREIGN KEY (issuer_id) REFERENCES issuers (id) ON DELETE CASCADE
);

CREATE OR REPLACE FUNCTION certctl_request_crl_refresh() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO crl_refresh_requests (issuer_id)
    SELECT DISTINCT issuer_id FROM inserted_revocations
    ON CONFLICT (issuer_id) DO UPDATE
        SET generation = crl_refresh_requests.generation + 1, requested_at = now();
    RETURN NULL;
END
$$;

-- Statement-level with a transition table: a bulk revocation of N certificates makes one
-- upsert per issuer, not N.
DROP TRIGGER IF EXISTS certificate_revocations_request_crl_refresh ON certificate_revocations;
CREATE TRIGGER certificate_revocations_request_crl_refresh
    AFTER INSERT ON certificate_revocations
    REFERENCING NEW TABLE AS inserted_revocations
    FOR EACH STATEMENT EXECUTE FUNCTION certctl_request_crl_refresh();
