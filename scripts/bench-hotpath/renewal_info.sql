-- What GET /acme/renewal-info/{certID} runs per request: the version lookup by serial
-- spellings. pgbench first picks a random issued serial (bench_serials, a primary-key read the
-- HTTP path does not need; the certID carries the serial).
\set k random(1, :certs)
SELECT serial_number AS s, upper(serial_number) AS su FROM bench_serials WHERE n = :k \gset
SELECT cv.not_before, cv.not_after, cv.pem_chain, rp.renewal_window_days, mc.status
   FROM certificate_versions cv
   JOIN managed_certificates mc ON mc.id = cv.certificate_id
   LEFT JOIN renewal_policies rp ON rp.id = mc.renewal_policy_id
  WHERE cv.serial_number = ANY(ARRAY[:s::text, :su::text]);
