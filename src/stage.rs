//! What a span does in a RAG or agent pipeline: the stage names written on `rag.stage` and used
//! as metric labels.

use std::fmt;

/// What a GenAI span does in a RAG/agent pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stage {
    /// A model call producing text (chat, completion).
    Llm,
    /// An embedding call.
    Embedding,
    /// A retrieval from a vector store or search index.
    Retrieval,
    /// A reranking of retrieved documents.
    Rerank,
    /// A tool call.
    Tool,
    /// An agent invocation.
    Agent,
    /// Glue between steps (a chain, workflow or task).
    Chain,
    /// A guardrail check.
    Guardrail,
    /// An evaluation of an output.
    Evaluator,
    /// A GenAI span of another or unknown role.
    Other,
}

impl Stage {
    /// Every stage, in declaration order.
    pub const ALL: [Stage; 10] = [
        Stage::Llm,
        Stage::Embedding,
        Stage::Retrieval,
        Stage::Rerank,
        Stage::Tool,
        Stage::Agent,
        Stage::Chain,
        Stage::Guardrail,
        Stage::Evaluator,
        Stage::Other,
    ];

    /// The lowercase name (`llm`, `embedding`, ...), as written on attributes and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Llm => "llm",
            Stage::Embedding => "embedding",
            Stage::Retrieval => "retrieval",
            Stage::Rerank => "rerank",
            Stage::Tool => "tool",
            Stage::Agent => "agent",
            Stage::Chain => "chain",
            Stage::Guardrail => "guardrail",
            Stage::Evaluator => "evaluator",
            Stage::Other => "other",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
