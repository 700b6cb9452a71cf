/*
 * cases_revocation.c - revocation by CRLs given in the configuration (PEM or
 * DER): a revoking CRL, a current one, check_revocation with and without a
 * CRL, an expired and a forged CRL, and, under Windows, CRLs placed in
 * Cert:\CurrentUser\CA.
 */
#include "driver.h"

/* ---- revocation (CRLs) ----------------------------------------------------
 * s_server presents server.pem, issued by ca.pem.  server_revoked.crl (PEM)
 * revokes it (keyCompromise, on the day in server_revoked.date);
 * current.crl.der (DER) is a current CRL of the same CA that does not;
 * expired.crl's nextUpdate has passed.  ca.name is the CA's name (RFC 2253). */

int case_crl_revokes(void)
{
    char date[32], ca[300], by[320];
    file_text("server_revoked.date", date, sizeof(date));
    file_text("ca.name", ca, sizeof(ca));
    char on[48];
    snprintf(on, sizeof(on), "revoked on %s", date);
    snprintf(by, sizeof(by), "by '%s'", ca);
    opts o = {NULL, NULL, NULL, DCX_VERIFY_TRUST_CHAIN, "ca.pem", {NULL, NULL}, 1, 0, NULL,
              "server_revoked.crl", 0};
    return expect_refusal_saying(&o, sserver_port, "localhost", DCX_VR_REVOKED, on, by,
                                 "(keyCompromise)", (const char *)NULL);
}

int case_crl_current_accepts(void)
{
    opts o = {NULL, NULL, NULL, DCX_VERIFY_TRUST_CHAIN, "ca.pem", {NULL, NULL}, 1, 0, NULL,
              "current.crl.der", 1};
    return expect_accept(&o, sserver_port, "localhost");
}

int case_crl_required_missing(void)
{
    char ca[300], want[340];
    file_text("ca.name", ca, sizeof(ca));
    snprintf(want, sizeof(want), "no current CRL from '%s'", ca);
    opts o = {NULL, NULL, NULL, DCX_VERIFY_TRUST_CHAIN, "ca.pem", {NULL, NULL}, 1, 0, NULL, NULL, 1};
    return expect_refusal_saying(&o, sserver_port, "localhost", DCX_VR_REVOCATION, want,
                                 (const char *)NULL);
}

int case_crl_not_required_missing(void)
{
    opts o = {NULL, NULL, NULL, DCX_VERIFY_TRUST_CHAIN, "ca.pem", {NULL, NULL}, 1, 0, NULL, NULL, 0};
    return expect_accept(&o, sserver_port, "localhost");
}

int case_crl_expired(void)
{
    char ca[300], want[340];
    file_text("ca.name", ca, sizeof(ca));
    snprintf(want, sizeof(want), "the CRL from '%s' expired on ", ca);
    opts o = {NULL, NULL, NULL, DCX_VERIFY_TRUST_CHAIN, "ca.pem", {NULL, NULL}, 1, 0, NULL,
              "expired.crl", 1};
    return expect_refusal_saying(&o, sserver_port, "localhost", DCX_VR_REVOCATION, want,
                                 (const char *)NULL);
}

/* forged.crl names the CA as its issuer and revokes the server, but another
 * key signed it: it says nothing, so the server passes without
 * check_revocation, and with it has no current CRL. */
int case_crl_forged(void)
{
    char ca[300], want[340];
    file_text("ca.name", ca, sizeof(ca));
    snprintf(want, sizeof(want), "no current CRL from '%s'", ca);
    opts o = {NULL, NULL, NULL, DCX_VERIFY_TRUST_CHAIN, "ca.pem", {NULL, NULL}, 1, 0, NULL,
              "forged.crl", 0};
    if (expect_accept(&o, sserver_port, "localhost") != PASS)
        return FAIL;
    o.check_revocation = 1;
    if (expect_refusal_saying(&o, sserver_port, "localhost", DCX_VR_REVOCATION, want,
                              (const char *)NULL) != PASS)
        return FAIL;
    char said[sizeof(msg)];
    snprintf(said, sizeof(said), "%s", msg);
    return say(PASS, "accepted without check_revocation; with it %s", said);
}

#ifdef _WIN32
/* Puts a CRL file into Cert:\CurrentUser\CA (as `certutil -user -addstore CA`
 * does), or with name NULL removes every CRL from it.  Removing goes by the
 * registry key that holds them: Wine 8.0's CertDeleteCRLFromStore on a system
 * store releases the CRL once too often ("Assertion failed: ref >= 0" in
 * crypt32/context.c) and the process dies. */
static int ca_store_crl(const char *name)
{
    if (!name) {
        LSTATUS rc = RegDeleteTreeW(HKEY_CURRENT_USER,
                                    L"Software\\Microsoft\\SystemCertificates\\CA\\CRLs");
        return rc == ERROR_SUCCESS || rc == ERROR_FILE_NOT_FOUND;
    }
    HCERTSTORE ca = CertOpenStore(CERT_STORE_PROV_SYSTEM_W, 0, 0, CERT_SYSTEM_STORE_CURRENT_USER,
                                  L"CA");
    dcx_blob b = file_blob(name);
    int ok = ca && b.data && CertAddEncodedCRLToStore(ca, X509_ASN_ENCODING, b.data, (DWORD)b.len,
                                                      CERT_STORE_ADD_REPLACE_EXISTING, NULL);
    free((void *)b.data);
    if (ca)
        CertCloseStore(ca, 0);
    return ok;
}

/* How many CRLs Cert:\CurrentUser\CA holds (-1: it cannot be opened). */
static int ca_store_crl_count(void)
{
    HCERTSTORE ca = CertOpenStore(CERT_STORE_PROV_SYSTEM_W, 0, 0,
                                  CERT_SYSTEM_STORE_CURRENT_USER | CERT_STORE_READONLY_FLAG, L"CA");
    int n = 0;
    PCCRL_CONTEXT crl = NULL;
    if (!ca)
        return -1;
    while ((crl = CertEnumCRLsInStore(ca, crl)) != NULL)
        n++;
    CertCloseStore(ca, 0);
    return n;
}
#endif

/* CRLs in the CA store count as the CRLs given do. */
int case_crl_in_ca_store(void)
{
#ifndef _WIN32
    return say(SKIP, "no system certificate store on this platform");
#else
    char date[32], on[48];
    file_text("server_revoked.date", date, sizeof(date));
    snprintf(on, sizeof(on), "revoked on %s", date);
    opts revoking = {NULL, NULL, NULL, DCX_VERIFY_TRUST_CHAIN, "ca.pem", {NULL, NULL}, 1, 0, NULL,
                     NULL, 0};
    opts required = revoking;
    required.check_revocation = 1;
    if (!ca_store_crl(NULL) || !ca_store_crl("server_revoked.der") || ca_store_crl_count() != 1)
        return say(FAIL, "cannot put a CRL into Cert:\\CurrentUser\\CA: 0x%08lX",
                   (unsigned long)GetLastError());
    int out = expect_refusal_saying(&revoking, sserver_port, "localhost", DCX_VR_REVOKED, on,
                                    (const char *)NULL);
    char first[1024];
    snprintf(first, sizeof(first), "%s", msg);
    if (out == PASS && ca_store_crl(NULL) && ca_store_crl("current.crl.der"))
        out = expect_accept(&required, sserver_port, "localhost");
    if ((!ca_store_crl(NULL) || ca_store_crl_count() != 0) && out == PASS)
        out = say(FAIL, "cannot empty Cert:\\CurrentUser\\CA of its CRLs again");
    if (out == PASS)
        say(PASS, "a revoking CRL in CA: %s; a current one there with check_revocation: accepted",
            first);
    return out;
#endif
}
