/** A configuration value that cannot be used; the message names the variable or option. */
export class ConfigError extends Error {}

/**
 * Typed readers over environment variables. Unset or empty is `undefined` (defaults are
 * filled in one place by the option compilers); an invalid value throws ConfigError naming
 * the variable — never a silent fallback to the default.
 */
export function envReader(env: NodeJS.ProcessEnv) {
  const str = (name: string) => {
    const v = env[name]?.trim();
    return v === undefined || v === "" ? undefined : v;
  };
  const int = (name: string, min: number, max = Number.MAX_SAFE_INTEGER) => {
    const v = str(name);
    if (v === undefined) return undefined;
    if (!/^\d+$/.test(v) || Number(v) < min || Number(v) > max) {
      throw new ConfigError(`${name} must be an integer between ${min} and ${max}, got "${env[name]}"`);
    }
    return Number(v);
  };
  const num = (name: string, min: number, max: number) => {
    const v = str(name);
    if (v === undefined) return undefined;
    if (!/^\d+(\.\d+)?$/.test(v) || Number(v) < min || Number(v) > max) {
      throw new ConfigError(`${name} must be a number between ${min} and ${max}, got "${env[name]}"`);
    }
    return Number(v);
  };
  const bool = (name: string) => {
    const v = str(name)?.toLowerCase();
    if (v === undefined) return undefined;
    if (["1", "true", "yes", "on"].includes(v)) return true;
    if (["0", "false", "no", "off"].includes(v)) return false;
    throw new ConfigError(`${name} must be true or false, got "${env[name]}"`);
  };
  return { str, int, num, bool };
}
