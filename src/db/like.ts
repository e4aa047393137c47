/** A LIKE pattern matching what starts with `prefix`, its own wildcards (`%`, `_`, `\`) taken literally. */
export function likePrefix(prefix: string): string {
  return prefix.replace(/[\\%_]/g, (c) => `\\${c}`) + "%";
}
