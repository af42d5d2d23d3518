/**
 * Items pushed on one side, read in order with for-await on the other; end() lets the reader finish (or
 * fail) once drained: a stream's items, on either side of the thread boundary.
 */
export class Inbox<T> implements AsyncIterable<T> {
  #items: T[] = [];
  #error: Error | null = null;
  #ended = false;
  #wake: (() => void) | null = null;

  push(item: T): void {
    this.#items.push(item);
    this.#wake?.();
  }

  end(error: Error | null = null): void {
    this.#ended = true;
    this.#error = error;
    this.#wake?.();
  }

  get ended(): boolean {
    return this.#ended;
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<T> {
    for (;;) {
      while (this.#items.length > 0) yield this.#items.shift()!;
      if (this.#ended) {
        if (this.#error) throw this.#error;
        return;
      }
      await new Promise<void>((resolve) => (this.#wake = resolve));
      this.#wake = null;
    }
  }
}
