// The Redfish BMC driver: createRedfishDriver for a pinned, enrolled BMC; probeRedfish / fetchFingerprint
// for trust on first use (show the certificate to the operator, pin its SHA-256 fingerprint).
export { createRedfishDriver, probeRedfish, type RedfishDriverOptions, type RedfishProbe } from './driver.ts';
export { fetchFingerprint, formatCertificate, fingerprintOfPem, type CertificateInfo } from './transport.ts';
export { normalizeFingerprint } from './model.ts';
