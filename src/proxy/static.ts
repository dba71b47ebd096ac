/**
 * Static releases: the proxy serves a `type: static` app's release directory itself. GET and
 * HEAD only; nothing outside the directory and no dot-segment (`.env`) is ever served.
 * @module
 */
import { join, relative, sep } from "node:path";
import { textResponse } from "./pages.ts";
import { ifExists, openChecked } from "../fsutil.ts";

const CONTENT_TYPES: Record<string, string> = {
  html: "text/html; charset=utf-8",
  htm: "text/html; charset=utf-8",
  css: "text/css; charset=utf-8",
  js: "text/javascript; charset=utf-8",
  mjs: "text/javascript; charset=utf-8",
  json: "application/json",
  map: "application/json",
  svg: "image/svg+xml",
  png: "image/png",
  jpg: "image/jpeg",
  jpeg: "image/jpeg",
  gif: "image/gif",
  webp: "image/webp",
  avif: "image/avif",
  ico: "image/x-icon",
  txt: "text/plain; charset=utf-8",
  xml: "application/xml",
  pdf: "application/pdf",
  woff: "font/woff",
  woff2: "font/woff2",
  wasm: "application/wasm",
};

/** The Content-Type of a file name, by extension. */
export function contentType(name: string): string {
  const dot = name.lastIndexOf(".");
  return (dot > 0 && CONTENT_TYPES[name.slice(dot + 1).toLowerCase()]) || "application/octet-stream";
}

/**
 * Serves `req` from the static release `dir`: GET and HEAD, `index.html` for directories,
 * ETag/Last-Modified with 304s, 404 otherwise. Nothing outside `dir` and nothing whose path has
 * a segment starting with `.` (`.env`, `.deploy-paradigm.json`) is ever served, symlinks
 * included.
 */
export async function serveStatic(dir: string, req: Request): Promise<Response> {
  if (req.method !== "GET" && req.method !== "HEAD") {
    return textResponse(405, "405 method not allowed", { allow: "GET, HEAD" });
  }
  const url = new URL(req.url);
  const segments: string[] = [];
  for (const raw of url.pathname.split("/")) {
    let segment: string;
    try {
      segment = decodeURIComponent(raw);
    } catch {
      return textResponse(400, "400 malformed percent-encoding in the path");
    }
    if (segment === "") continue;
    if (segment.startsWith(".") || /[\0\\/]/.test(segment)) return await notFound(null, req);
    segments.push(segment);
  }
  let root: string;
  try {
    root = await Deno.realPath(dir);
  } catch {
    return textResponse(503, "503 the release's files are missing");
  }
  let file = await resolveInside(root, join(root, ...segments));
  if (!file) return await notFound(root, req);
  // (Gone since it was found, the app's files changing under us: not found, never a 500.)
  let stat = await ifExists(Deno.stat(file));
  if (!stat) return await notFound(root, req);
  if (stat.isDirectory) {
    if (!url.pathname.endsWith("/")) {
      const location = "/" + segments.map(encodeURIComponent).map((s) => s + "/").join("") + url.search;
      return new Response(null, { status: 301, headers: { location } });
    }
    file = await resolveInside(root, join(file, "index.html"));
    if (!file) return await notFound(root, req);
    stat = await ifExists(Deno.stat(file));
    if (!stat) return await notFound(root, req);
  }
  if (!stat.isFile) return await notFound(root, req);
  return await fileResponse(root, file, req, 200);
}

/** The real path of `path` when it exists inside `root` with no dot-segment, else undefined. */
async function resolveInside(root: string, path: string): Promise<string | undefined> {
  let real: string;
  try {
    real = await Deno.realPath(path);
  } catch (error) {
    // A name too long for the file system, or a symbolic link loop: nothing to serve there either.
    if (error instanceof Deno.errors.NotFound || error instanceof Deno.errors.NotADirectory) return undefined;
    if (error instanceof Deno.errors.FilesystemLoop || (error as { code?: string }).code === "ENAMETOOLONG") {
      return undefined;
    }
    throw error;
  }
  const base = root.endsWith(sep) ? root : root + sep;
  if (real !== root && !real.startsWith(base)) return undefined;
  if (relative(root, real).split(sep).some((segment) => segment.startsWith("."))) return undefined;
  return real;
}

async function notFound(root: string | null, req: Request): Promise<Response> {
  const page = root ? await resolveInside(root, join(root, "404.html")) : undefined;
  const stat = page ? await ifExists(Deno.stat(page)) : undefined;
  if (page && stat?.isFile) return await fileResponse(root!, page, req, 404);
  return textResponse(404, "404 not found");
}

/** `path` (checked inside `root`) as the answer: opened only if it is still a file of `root`'s tree (openChecked). */
async function fileResponse(root: string, path: string, req: Request, status: number): Promise<Response> {
  const opened = await openChecked(path, (await Deno.stat(root)).gid).catch((error) => {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw error;
  });
  if (!opened) return textResponse(404, "404 not found"); // swapped for a link since it was checked
  const { file, stat } = opened;
  const mtime = stat.mtime?.getTime() ?? 0;
  const headers = new Headers({
    "content-type": contentType(path),
    "cache-control": "no-cache",
    "x-content-type-options": "nosniff",
  });
  if (status === 200) {
    const etag = `"${stat.size.toString(16)}-${Math.floor(mtime).toString(16)}"`;
    headers.set("etag", etag);
    if (stat.mtime) headers.set("last-modified", stat.mtime.toUTCString());
    if (notModified(req.headers, etag, mtime)) {
      file.close();
      return new Response(null, { status: 304, headers });
    }
  }
  headers.set("content-length", String(stat.size));
  if (req.method === "HEAD") {
    file.close();
    return new Response(null, { status, headers });
  }
  return new Response(exactly(file, stat.size), { status, headers });
}

/**
 * `file`'s first `size` bytes, its size when it was found: a file that grows while it is sent
 * never sends more than its Content-Length announced (HTTP/2 clients reset such a stream), and one
 * that shrinks fails the stream, so no client takes a short body for the whole file.
 */
function exactly(file: Deno.FsFile, size: number): ReadableStream<Uint8Array> {
  const reader = file.readable.getReader();
  let left = size;
  const end = (controller: ReadableStreamDefaultController<Uint8Array>) => {
    controller.close();
    reader.cancel().catch(() => {}); // closes the file
  };
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (left === 0) return end(controller);
      const { done, value } = await reader.read();
      if (done) return controller.error(new Error(`the file ended ${left} bytes before its size when it was found`));
      const piece = value.length > left ? value.subarray(0, left) : value;
      left -= piece.length;
      controller.enqueue(piece);
      if (left === 0) end(controller);
    },
    cancel: (reason) => reader.cancel(reason),
  }, { highWaterMark: 0 });
}

function notModified(headers: Headers, etag: string, mtime: number): boolean {
  const match = headers.get("if-none-match");
  if (match !== null) {
    return match.split(",").some((tag) => {
      const value = tag.trim();
      return value === "*" || value.replace(/^W\//, "") === etag;
    });
  }
  const since = Date.parse(headers.get("if-modified-since") ?? "");
  return !Number.isNaN(since) && Math.floor(mtime / 1000) <= Math.floor(since / 1000);
}
