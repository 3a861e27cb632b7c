import type { Embeddings } from '@langchain/core/embeddings';

/**
 * A LangChain `Embeddings` that also says which model it is (stored with every vector, so a
 * store can refuse to mix vectors of two models) and how long its vectors are.
 */
export interface KeelEmbeddings extends Embeddings {
  /** `provider:model`, e.g. `local:all-minilm-l6-v2`, `openai:text-embedding-3-small`, `hashing:256` */
  readonly id: string;
  /** the vector length (a remote model may have to be asked once) */
  dimensions(): Promise<number>;
}
