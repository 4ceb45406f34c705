package api

import (
	"net/http"

	"github.com/gin-gonic/gin"
)

// ModelsView is the answer of GET /api/models: the models a request may
// name, and the one used when it names none.
type ModelsView struct {
	Default string   `json:"default"`
	Models  []string `json:"models"`
}

func (s *Server) models(c *gin.Context) {
	c.JSON(http.StatusOK, ModelsView{Default: s.cfg.LLM.Model, Models: s.cfg.LLM.AllowedModels()})
}
