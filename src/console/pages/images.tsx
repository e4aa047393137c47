import { useState } from "preact/hooks";
import { ImageFormat, type Image, RunnerType } from "../../../gen/runtara/environment/v1/environment_pb.js";
import type { EnvironmentClient } from "../../client/browser.js";
import { ConfirmDialog } from "../components/confirm-dialog.js";
import { ErrorNote } from "../components/error-note.js";
import { describeError } from "../errors.js";
import { formatBytes, formatCount, formatTime } from "../format.js";
import { usePolled } from "../hooks.js";
import { uploadImage } from "../upload.js";

const PAGE_SIZE = 50;

/** Every version of every image name (keyset pages), an upload by drag and drop, deleting a version. */
export function ImagesPage({ client }: { client: EnvironmentClient }) {
  const [tokens, setTokens] = useState<string[]>([""]);
  const [prefix, setPrefix] = useState("");
  const [deleting, setDeleting] = useState<Image>();
  const [error, setError] = useState<string>();
  const list = usePolled((signal) => client.listImages({ allVersions: true, namePrefix: prefix, limit: PAGE_SIZE, pageToken: tokens.at(-1) }, { signal }), [prefix, tokens]);

  const remove = async (image: Image) => {
    setDeleting(undefined);
    try {
      await client.deleteImage({ imageId: image.imageId });
      setError(undefined);
      list.reload();
    } catch (e) {
      setError(`Deleting ${image.name} v${image.version} failed — ${describeError(e)}`);
    }
  };

  return (
    <section aria-labelledby="images-title">
      <h1 id="images-title">Images</h1>
      <Upload client={client} onUploaded={list.reload} />
      <form class="filters" onSubmit={(e) => e.preventDefault()} aria-label="Filter images">
        <label>
          Name
          <input name="namePrefix" placeholder="name prefix" value={prefix} onInput={(e) => (setPrefix(e.currentTarget.value), setTokens([""]))} />
        </label>
      </form>
      <ErrorNote error={list.error ?? error} />
      <p class="muted">{list.data ? `${formatCount(list.data.totalCount)} versions` : "Loading…"}</p>
      <div class="table-wrap">
        <table class="images">
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Version</th>
              <th scope="col">Runner</th>
              <th scope="col">Size</th>
              <th scope="col">Digest</th>
              <th scope="col">Registered</th>
              <th scope="col">Last used</th>
              <th scope="col">
                <span class="visually-hidden">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {list.data?.images.map((image) => (
              <tr key={image.imageId} data-image-name={image.name}>
                <td>{image.name}</td>
                <td>
                  v{image.version}
                  {image.tag && <span class="muted"> {image.tag}</span>}
                </td>
                <td>{RunnerType[image.runnerType].toLowerCase()}</td>
                <td>{formatBytes(image.sizeBytes)}</td>
                <td class="mono" title={image.manifestDigest || `sha256:${image.sha256}`}>
                  {(image.manifestDigest || `sha256:${image.sha256}`).slice(0, 19)}…
                </td>
                <td>{formatTime(image.createdAt)}</td>
                <td>{image.lastUsedAt ? formatTime(image.lastUsedAt) : "never"}</td>
                <td>
                  <button type="button" class="danger" aria-label={`Delete ${image.name} version ${image.version}`} onClick={() => setDeleting(image)}>
                    Delete
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <nav class="pager" aria-label="Pages">
        <button type="button" disabled={tokens.length === 1} onClick={() => setTokens(tokens.slice(0, -1))}>
          ← Previous
        </button>
        <button type="button" disabled={!list.data?.nextPageToken} onClick={() => setTokens([...tokens, list.data!.nextPageToken])}>
          Next →
        </button>
      </nav>
      {deleting && (
        <ConfirmDialog title={`Delete ${deleting.name} v${deleting.version}?`} confirmLabel="Delete" danger onClose={() => setDeleting(undefined)} onConfirm={() => void remove(deleting)}>
          <p>The version's files are removed; its number is never given out again. Refused while an unfinished instance uses it.</p>
        </ConfirmDialog>
      )}
    </section>
  );
}

/** A drop zone (or file picker) with the name and runner, and the upload's progress. */
function Upload({ client, onUploaded }: { client: EnvironmentClient; onUploaded: () => void }) {
  const [file, setFile] = useState<File>();
  const [name, setName] = useState("");
  const [runnerType, setRunnerType] = useState(RunnerType.OCI);
  const [format, setFormat] = useState(ImageFormat.BINARY);
  const [received, setReceived] = useState<number>();
  const [result, setResult] = useState<string>();
  const [error, setError] = useState<string>();
  const [dragging, setDragging] = useState(false);
  const [busy, setBusy] = useState(false);

  const choose = (f: File | undefined) => {
    if (!f) return;
    setFile(f);
    setName((old) => old || f.name.replace(/\.[^.]*$/, "").replace(/[^A-Za-z0-9._-]/g, "-"));
    setFormat(/\.tar(\.gz)?$|\.tgz$/.test(f.name) ? ImageFormat.OCI_ARCHIVE : ImageFormat.BINARY);
    setResult(undefined);
    setError(undefined);
  };
  const submit = async (e: Event) => {
    e.preventDefault();
    if (!file) return;
    setError(undefined);
    setResult(undefined);
    setReceived(0);
    setBusy(true);
    try {
      const image = await uploadImage(client, file, { name: name.trim(), runnerType, format }, setReceived);
      setResult(`Uploaded ${image.name} v${image.version} (${formatBytes(image.sizeBytes)})`);
      onUploaded();
    } catch (err) {
      setError(`Upload failed — ${describeError(err)}`);
    } finally {
      setBusy(false);
    }
  };
  const percent = file && received !== undefined ? Math.floor((received / Math.max(1, file.size)) * 100) : undefined;

  return (
    <form class="upload" onSubmit={submit} aria-labelledby="upload-title">
      <h2 id="upload-title">Upload an image</h2>
      <label
        class={`drop-zone${dragging ? " dragging" : ""}`}
        onDragOver={(e) => (e.preventDefault(), setDragging(true))}
        onDragLeave={() => setDragging(false)}
        onDrop={(e) => {
          e.preventDefault();
          setDragging(false);
          choose(e.dataTransfer?.files[0]);
        }}
      >
        {file ? `${file.name} · ${formatBytes(file.size)}` : "Drop a static binary or an OCI archive here, or choose a file"}
        <input name="file" type="file" class="visually-hidden" onChange={(e) => choose(e.currentTarget.files?.[0])} />
      </label>
      <div class="filters">
        <label>
          Name
          <input name="imageName" required value={name} onInput={(e) => setName(e.currentTarget.value)} />
        </label>
        <label>
          Runner
          <select name="runner" value={runnerType} onChange={(e) => setRunnerType(Number(e.currentTarget.value) as RunnerType)}>
            <option value={RunnerType.OCI}>OCI</option>
            <option value={RunnerType.NATIVE}>native</option>
          </select>
        </label>
        <label>
          Format
          <select name="format" value={format} onChange={(e) => setFormat(Number(e.currentTarget.value) as ImageFormat)}>
            <option value={ImageFormat.BINARY}>static binary</option>
            <option value={ImageFormat.OCI_ARCHIVE}>OCI archive</option>
          </select>
        </label>
        <button type="submit" class="primary" disabled={!file || busy}>
          Upload
        </button>
      </div>
      {percent !== undefined && (
        <label class="progress">
          Uploaded
          <progress max={100} value={percent} aria-valuetext={`${percent}%`} />
          <span>{percent}%</span>
        </label>
      )}
      {result && (
        <p role="status" class="ok">
          {result}
        </p>
      )}
      <ErrorNote error={error} />
    </form>
  );
}
