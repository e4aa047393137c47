import type { DatabasePool } from "slonik";
import { findImage } from "./repository.js";
import type { Image } from "./types.js";

/** Images remembered by id (the oldest forgotten first). */
const CAPACITY = 1024;

/**
 * A tenant's image by id, remembered once found: an image never changes after it is registered
 * (its files and fields; a new version is a new id), so a start needs no statement to find an
 * image it found before. A deletion (here or on another replica) is not seen here: the
 * instance insert's foreign key then refuses the start as NOT_FOUND, as the lookup would have.
 */
export class ImageLookup {
  private readonly known = new Map<string, Image>();

  constructor(private readonly db: DatabasePool) {}

  async byId(tenantId: string, imageId: string): Promise<Image | null> {
    const known = this.known.get(imageId);
    if (known !== undefined) return known.tenantId === tenantId ? known : null;
    const image = await findImage(this.db, tenantId, imageId);
    if (image === null) return null;
    if (this.known.size >= CAPACITY) this.known.delete(this.known.keys().next().value!);
    this.known.set(imageId, image);
    return image;
  }
}
