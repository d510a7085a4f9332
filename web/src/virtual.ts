// Which rows of a long list are on screen. A conversation may hold tens of
// thousands of messages; only those near the viewport are rendered, and the
// rest are stood in for by padding of their (measured or estimated) height.

/** Row heights in pixels, as measured once rendered, by row key. */
export class Heights {
  private known = new Map<string, number>();
  /** Counts the measurements that changed a height. */
  version = 0;

  constructor(readonly estimate: number) {}

  of(key: string): number {
    return this.known.get(key) ?? this.estimate;
  }

  /** Records a measured height; true when it differs from what was assumed. */
  measure(key: string, height: number): boolean {
    if (this.of(key) === height && this.known.has(key)) {
      return false;
    }
    this.known.set(key, height);
    this.version++;
    return true;
  }

  /** The top of each row and, last, the list's whole height. */
  offsets(keys: readonly string[]): number[] {
    const tops = new Array<number>(keys.length + 1);
    let top = 0;
    for (let i = 0; i < keys.length; i++) {
      tops[i] = top;
      top += this.of(keys[i]);
    }
    tops[keys.length] = top;
    return tops;
  }
}

/** The rows to render, and the space above and below them. */
export interface Slice {
  /** First row rendered. */
  start: number;
  /** One past the last row rendered. */
  end: number;
  before: number;
  after: number;
}

/**
 * The rows that meet the viewport `[top, top + height)` widened by
 * `overscan` pixels on each side, given the row offsets from `Heights.offsets`.
 */
export function slice(tops: readonly number[], top: number, height: number, overscan: number): Slice {
  const count = tops.length - 1;
  const total = tops[count];
  const from = Math.max(top - overscan, 0);
  const to = Math.min(top + height + overscan, total);
  if (count === 0) {
    return { start: 0, end: 0, before: 0, after: 0 };
  }
  const start = rowAt(tops, from);
  const end = rowAt(tops, Math.max(to - 1, from)) + 1;
  return { start, end, before: tops[start], after: total - tops[end] };
}

/** The row whose span holds `y` (the last row for `y` at or past the end). */
export function rowAt(tops: readonly number[], y: number): number {
  const count = tops.length - 1;
  let lo = 0;
  let hi = count;
  // The last row whose top is at or above y.
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (tops[mid] <= y) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return Math.min(lo, Math.max(count - 1, 0));
}

/** A row that stays where it is on screen while rows above it change. */
export interface Anchor {
  key: string;
  /** The row's top, less the scroll position, in pixels. */
  offset: number;
}

/** The first row on screen, as an anchor. */
export function anchorAt(keys: readonly string[], tops: readonly number[], top: number): Anchor | undefined {
  if (keys.length === 0) {
    return undefined;
  }
  const row = rowAt(tops, top);
  return { key: keys[row], offset: tops[row] - top };
}

/** The scroll position that puts the anchor where it was; undefined when its row is gone. */
export function scrollFor(keys: readonly string[], tops: readonly number[], anchor: Anchor): number | undefined {
  const row = keys.indexOf(anchor.key);
  return row < 0 ? undefined : Math.max(tops[row] - anchor.offset, 0);
}
