-- What GET /api/v1/certificates (no filters, page 1) runs per request: the count, then the page.
SELECT count(*) FROM managed_certificates WHERE true;
SELECT id, name, common_name, sans, environment, owner_id, team_id, issuer_id, renewal_policy_id,
       certificate_profile_id, agent_id, status, source, expires_at, last_renewal_at, last_deployed_at, revoked_at,
       revocation_reason, tags, created_at, updated_at
  FROM managed_certificates WHERE true ORDER BY created_at ASC, id ASC LIMIT 50 OFFSET 0;
