// How times, durations and money read on screen.

import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";

export function date(ts: Timestamp | undefined): Date | undefined {
  return ts ? timestampDate(ts) : undefined;
}

export function dateTime(ts: Timestamp | undefined): string {
  const d = date(ts);
  return d ? d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" }) : "";
}

export function relative(d: Date | undefined, now = new Date()): string {
  if (!d) {
    return "";
  }
  const seconds = Math.round((d.getTime() - now.getTime()) / 1000);
  const format = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
  const abs = Math.abs(seconds);
  if (abs < 60) return format.format(seconds, "second");
  if (abs < 3600) return format.format(Math.round(seconds / 60), "minute");
  if (abs < 86400) return format.format(Math.round(seconds / 3600), "hour");
  return format.format(Math.round(seconds / 86400), "day");
}

/** The customer's local time now, or "" when the zone is unknown. */
export function localTime(timeZone: string, now = new Date()): string {
  if (!timeZone) {
    return "";
  }
  try {
    return now.toLocaleTimeString(undefined, { timeZone, hour: "2-digit", minute: "2-digit" });
  } catch {
    return "";
  }
}

export function duration(seconds: number | undefined): string {
  if (seconds === undefined || !Number.isFinite(seconds)) {
    return "–";
  }
  const s = Math.max(0, Math.round(seconds));
  const m = Math.floor(s / 60);
  return m >= 60 ? `${Math.floor(m / 60)}h ${m % 60}m` : `${m}:${String(s % 60).padStart(2, "0")}`;
}

export function percent(fraction: number | undefined): string {
  return fraction === undefined ? "–" : `${(fraction * 100).toFixed(1)}%`;
}

export function money(currency: string, minor: bigint): string {
  try {
    const digits = new Intl.NumberFormat(undefined, { style: "currency", currency })
      .resolvedOptions().maximumFractionDigits ?? 2;
    return new Intl.NumberFormat(undefined, { style: "currency", currency }).format(
      Number(minor) / 10 ** digits,
    );
  } catch {
    return `${minor} ${currency}`;
  }
}
