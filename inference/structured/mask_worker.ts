/**
 * The token mask thread's Worker (mask_thread.ts MaskThread.start): it serves masks on its global scope.
 */
import { type MaskPort, serveMasks } from "./mask_thread.ts";

serveMasks(self as unknown as MaskPort);
