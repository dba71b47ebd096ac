/** Self-signed certificates for tests and the benchmark, made by Debian's openssl. */
import { join } from "node:path";

/** A certificate's files. */
export interface SelfSigned {
  certificate: string;
  key: string;
}

/**
 * A self-signed ECDSA P-256 leaf for `names` (DNS names; `ips` as IP addresses), written to
 * `<dir>/<file>.pem` and `<dir>/<file>.key`, both 0600. Throws with openssl's output when it fails.
 */
export async function selfSigned(
  dir: string,
  names: string[],
  options: { file?: string; ips?: string[]; days?: number } = {},
): Promise<SelfSigned> {
  const file = options.file ?? "cert";
  const [certificate, key] = [join(dir, `${file}.pem`), join(dir, `${file}.key`)];
  const alt = [...names.map((name) => `DNS:${name}`), ...(options.ips ?? []).map((ip) => `IP:${ip}`)].join(",");
  const { code, stderr } = await new Deno.Command("openssl", {
    args: [
      ...["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"],
      ...["-days", String(options.days ?? 2), "-keyout", key, "-out", certificate, "-subj", `/CN=${names[0]}`],
      ...["-addext", `subjectAltName=${alt}`, "-addext", "basicConstraints=critical,CA:FALSE"],
    ],
    stdout: "null",
    stderr: "piped",
  }).output();
  if (code !== 0) throw new Error(`openssl req failed: ${new TextDecoder().decode(stderr)}`);
  for (const path of [certificate, key]) await Deno.chmod(path, 0o600);
  return { certificate, key };
}
