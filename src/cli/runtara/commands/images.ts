import type { Command } from "commander";
import { GetImageResponseSchema, ImageFormat, ListImagesResponseSchema, RunnerType, type Image } from "../../../../gen/runtara/environment/v1/environment_pb.js";
import { bytes, details, emit, enumName, morePages, oneLine, relativeTime, table } from "../output.js";
import { intArgument } from "../parse.js";
import type { Action } from "../program.js";

export function registerImages(program: Command, action: Action): void {
  const images = program.command("images").description("list, inspect and delete images");
  images
    .command("ls")
    .description("images of the tenant, the latest version of each name unless --all-versions")
    .option("--name-prefix <prefix>", "only names starting with this")
    .option("--all-versions", "every version, not only the latest")
    .option("--limit <n>", "at most this many")
    .option("--page-token <token>", "the next page, as a previous listing printed")
    .action(
      action(async (ctx, flags: { namePrefix?: string; allVersions?: boolean; limit?: string; pageToken?: string }) => {
        const res = await ctx.client.listImages(
          {
            tenantId: ctx.tenant,
            namePrefix: flags.namePrefix ?? "",
            allVersions: flags.allVersions ?? false,
            limit: intArgument("--limit", flags.limit, 1) ?? 0,
            pageToken: flags.pageToken ?? "",
          },
          ctx.unary,
        );
        emit(ctx, ListImagesResponseSchema, res, () =>
          table(
            ["NAME", "VERSION", "TAG", "IMAGE ID", "RUNNER", "FORMAT", "SIZE", "CREATED"],
            res.images.map((i) => [i.name, String(i.version), i.tag, i.imageId, enumName(RunnerType, i.runnerType), formatName(i), bytes(i.sizeBytes), relativeTime(i.createdAt)]),
          ),
        );
        morePages(res.nextPageToken);
      }),
    );
  images
    .command("get <image-id>")
    .description("one image")
    .action(
      action(async (ctx, imageId: string) => {
        const res = await ctx.client.getImage({ tenantId: ctx.tenant, imageId }, ctx.unary);
        emit(ctx, GetImageResponseSchema, res, () => imageDetails(res.image!));
      }),
    );
  images
    .command("rm <image-id>")
    .description("delete one image version (refused while instances use it)")
    .action(
      action(async (ctx, imageId: string) => {
        await ctx.client.deleteImage({ tenantId: ctx.tenant, imageId }, ctx.unary);
        if (ctx.output === "json") return void process.stdout.write("{}\n");
        process.stdout.write(`deleted image ${imageId}\n`);
      }),
    );
}

const formatName = (i: Image) => (i.format === ImageFormat.OCI_ARCHIVE ? "oci-archive" : "binary");

export function imageDetails(i: Image): string {
  const rows: [string, string][] = [
    ["name", i.name],
    ["version", String(i.version)],
    ["tag", i.tag],
    ["image id", i.imageId],
    ["runner", enumName(RunnerType, i.runnerType)],
    ["format", formatName(i)],
    ["size", bytes(i.sizeBytes)],
    ["sha256", i.sha256],
    ["manifest digest", i.manifestDigest],
    ["description", oneLine(i.description)],
    ["created", relativeTime(i.createdAt)],
  ];
  return details(rows);
}
