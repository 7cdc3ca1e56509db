#!/usr/bin/python3
"""A Python ftplib client for the integration tests.

Connects, logs in, trusts the address in 227 (trust_server_pasv_ipv4_address = True, so a
wrong announced address really breaks the transfer), uses passive or active mode, then runs
the operations in the order given:
  --list                  LIST, printed to stdout
  --nlst                  NLST, one name a line to stdout
  --get REMOTE LOCAL      RETR into a local file
  --put LOCAL REMOTE      STOR from a local file
With --stock: ftplib's own default instead (trust_server_pasv_ipv4_address = False: the
227 address is ignored and data goes to the control host, as through a load balancer).
With --tls-ca CA: explicit FTPS (FTP_TLS, AUTH TLS before login, then PROT P), trusting
only that CA; data connections resume the control connection's TLS session.
Exits non-zero with the error on stderr at the first failure.
"""
import argparse
import ftplib
import ssl
import sys


class ReusingFTP_TLS(ftplib.FTP_TLS):
    """FTP_TLS whose data connections resume the control connection's TLS session:
    vsftpd (require_ssl_reuse) and proftpd refuse data connections that do not."""

    def ntransfercmd(self, cmd, rest=None):
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:
            conn = self.context.wrap_socket(conn, server_hostname=self.host,
                                            session=self.sock.session)
        return conn, size


class Op(argparse.Action):
    def __call__(self, parser, ns, values, option_string=None):
        ns.ops.append((self.dest, values))


def main():
    p = argparse.ArgumentParser()
    p.set_defaults(ops=[])
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--user", default="fxptest")
    p.add_argument("--password", default="fxptest")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--passive", dest="passive", action="store_true", default=True)
    mode.add_argument("--active", dest="passive", action="store_false")
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--source", help="connect from this local address")
    p.add_argument("--stock", action="store_true", help="keep ftplib's default PASV address handling")
    p.add_argument("--tls-ca", help="explicit FTPS, trusting this CA certificate (PEM)")
    p.add_argument("--list", dest="list", nargs=0, action=Op)
    p.add_argument("--nlst", dest="nlst", nargs=0, action=Op)
    p.add_argument("--get", dest="get", nargs=2, metavar=("REMOTE", "LOCAL"), action=Op)
    p.add_argument("--put", dest="put", nargs=2, metavar=("LOCAL", "REMOTE"), action=Op)
    a = p.parse_args()

    out = sys.stdout
    try:
        if a.tls_ca:
            ctx = ssl.create_default_context(cafile=a.tls_ca)
            ftp = ReusingFTP_TLS(context=ctx, timeout=a.timeout, encoding="latin-1")
        else:
            ftp = ftplib.FTP(timeout=a.timeout, encoding="latin-1")
        ftp.trust_server_pasv_ipv4_address = not a.stock
        ftp.connect(a.host, a.port, source_address=(a.source, 0) if a.source else None)
        ftp.login(a.user, a.password)  # FTP_TLS: AUTH TLS first
        if a.tls_ca:
            ftp.prot_p()
        ftp.set_pasv(a.passive)
        for op, args in a.ops:
            if op == "list":
                ftp.retrlines("LIST", lambda line: print(line, file=out))
            elif op == "nlst":
                for name in ftp.nlst():
                    print(name, file=out)
            elif op == "get":
                remote, local = args
                with open(local, "wb") as f:
                    ftp.retrbinary("RETR " + remote, f.write)
            elif op == "put":
                local, remote = args
                with open(local, "rb") as f:
                    ftp.storbinary("STOR " + remote, f)
        ftp.quit()
    except Exception as e:  # noqa: BLE001 - report anything and fail
        print("ftplib error: %s: %s" % (type(e).__name__, e), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
