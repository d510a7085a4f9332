// Files: sent straight to storage through the URL the node signs (or S3
// presigns), then confirmed.

/** One file picked in the composer, on its way up. */
export interface Draft {
  key: string;
  name: string;
  size: number;
  state: "uploading" | "ready" | "failed";
  /** Once confirmed. */
  fileId?: string;
  error?: string;
}

/** What an upload needs of the files service and of HTTP. */
export interface Uploader {
  createUploadUrl(request: {
    filename: string;
    sizeBytes: bigint;
    mimeType: string;
    channelId: string;
    idempotencyKey: string;
  }): Promise<{ uploadUrl: string; uploadMethod: string; uploadHeaders: Record<string, string>; file?: { fileId: string } }>;
  confirmUpload(request: { fileId: string }): Promise<unknown>;
  put(url: string, init: { method: string; headers: Record<string, string>; body: Blob }): Promise<{ ok: boolean; status: number }>;
}

/** Headers a page may not set itself: the browser sends them. */
const BROWSER_OWNED = new Set(["content-length", "host", "connection"]);

/** The upload URL's headers that a page can and must send. */
export function sendableHeaders(headers: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(headers).filter(([name]) => !BROWSER_OWNED.has(name.toLowerCase())));
}

/** Uploads one file to a conversation and confirms it; resolves to its id. */
export async function upload(api: Uploader, file: Blob & { name: string }, channelId: string): Promise<string> {
  const started = await api.createUploadUrl({
    filename: file.name,
    sizeBytes: BigInt(file.size),
    mimeType: file.type || "application/octet-stream",
    channelId,
    idempotencyKey: crypto.randomUUID(),
  });
  const fileId = started.file?.fileId;
  if (!fileId) {
    throw new Error("The server did not say where the file goes.");
  }
  const answer = await api.put(started.uploadUrl, {
    method: started.uploadMethod || "PUT",
    headers: sendableHeaders(started.uploadHeaders),
    body: file,
  });
  if (!answer.ok) {
    throw new Error(`The file could not be stored (HTTP ${answer.status}).`);
  }
  await api.confirmUpload({ fileId });
  return fileId;
}

/** 1,234,567 bytes as "1.2 MB". */
export function formatSize(bytes: number): string {
  if (bytes < 1000) {
    return `${bytes} B`;
  }
  const units = ["kB", "MB", "GB", "TB"];
  let value = bytes / 1000;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${value < 10 ? value.toFixed(1) : Math.round(value)} ${units[unit]}`;
}
