//! TLS for PostgreSQL connections as libpq checks certificates: not at all (`prefer`,
//! `require`), the CA only (`verify-ca`, and `require` with `sslrootcert`), or the CA and the
//! host's name (`verify-full`), against `sslrootcert` (a PEM file, or the platform's CAs);
//! with a client certificate when one is given.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{CertificateError, DigitallySignedStruct, InconsistentKeys, SignatureScheme};

use super::{NameCheck, RootCerts, Tls};

/// The rustls configuration of a connection: the server's certificate checked as the mode
/// says, and the client's certificate when one is given.
pub(super) fn client_config(tls: &Tls) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("cannot set up TLS: {error}"))?;
    let verifier: Arc<dyn ServerCertVerifier> = match tls.checks() {
        None => Arc::new(Unchecked(Arc::clone(&provider))),
        Some(names) => {
            let full: Arc<dyn ServerCertVerifier> = match root_certs(tls)? {
                RootCerts::System => Arc::new(
                    rustls_platform_verifier::Verifier::new(Arc::clone(&provider)).map_err(
                        |error| format!("cannot read the platform's CA certificates: {error}"),
                    )?,
                ),
                RootCerts::File(path) => {
                    let mut roots = rustls::RootCertStore::empty();
                    let certificates = CertificateDer::pem_file_iter(&path)
                        .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
                        .map_err(|error| {
                            format!(
                                "cannot read the CA certificates `sslrootcert={}`: {error}",
                                path.display()
                            )
                        })?;
                    let (added, _) = roots.add_parsable_certificates(certificates);
                    if added == 0 {
                        return Err(format!(
                            "`sslrootcert={}` holds no CA certificate (a PEM file of them is expected)",
                            path.display()
                        ));
                    }
                    rustls::client::WebPkiServerVerifier::builder_with_provider(
                        Arc::new(roots),
                        Arc::clone(&provider),
                    )
                    .build()
                    .map_err(|error| format!("cannot set up TLS: {error}"))?
                }
            };
            match names {
                NameCheck::Required => full,
                NameCheck::Skipped => Arc::new(AnyName(full)),
            }
        }
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match &tls.client_cert {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let client = client_certificate(cert, key, &provider)?;
            Ok(builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(client))))
        }
    }
}

/// The client certificate (`sslcert`) and its key (`sslkey`), read as libpq reads them: an
/// X.509 version 1 certificate (what PostgreSQL's own recipe, `openssl x509 -req`, makes)
/// is shown as it is and the server judges it; a key that is not the certificate's is refused.
fn client_certificate(
    cert: &std::path::Path,
    key: &std::path::Path,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<CertifiedKey, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
        .map_err(|error| format!("cannot read `sslcert={}`: {error}", cert.display()))?;
    let signing_key = PrivateKeyDer::from_pem_file(key)
        .map_err(|error| format!("cannot read `sslkey={}`: {error}", key.display()))
        .and_then(|der| {
            provider
                .key_provider
                .load_private_key(der)
                .map_err(|error| format!("the key `sslkey={}`: {error}", key.display()))
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => Err(format!(
            "`sslkey={}` is not the key of the client certificate `sslcert={}`: give the key it was made with",
            key.display(),
            cert.display()
        )),
        Err(rustls::Error::NoCertificatesPresented) => Err(format!(
            "`sslcert={}` holds no certificate (a PEM file with `-----BEGIN CERTIFICATE-----` is expected)",
            cert.display()
        )),
        // Anything else (a version 1 certificate rustls will not parse, a key that cannot
        // say its public half) is for the server to judge, as it is with libpq.
        _ => Ok(certified),
    }
}

/// The CA certificates a `verify-*` mode checks against: `sslrootcert`, else libpq's
/// `~/.postgresql/root.crt`.
fn root_certs(tls: &Tls) -> Result<RootCerts, String> {
    if let Some(roots) = &tls.root_certs {
        return Ok(roots.clone());
    }
    let default = std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".postgresql/root.crt"))
        .filter(|path| path.is_file());
    default.map(RootCerts::File).ok_or_else(|| {
        format!(
            "`sslmode={}` checks the server's certificate, but no CA certificate is given: add `sslrootcert=/path/to/ca.pem` (the CA that signed the server's certificate, such as your cloud provider's bundle) or `sslrootcert=system` (the platform's CAs) to the URL",
            tls.mode.name()
        )
    })
}

/// The server's certificate is not checked (libpq's `prefer` and `require`): the
/// connection is encrypted, and the handshake's signatures are still verified.
#[derive(Debug)]
struct Unchecked(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the certificate must be signed by a trusted CA, for whatever name.
#[derive(Debug)]
struct AnyName(Arc<dyn ServerCertVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The name is checked after the chain: a wrong name means the chain passed.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
